"""GET /auth/migration/errors (paging), POST /auth/migration/cleanup, POST /auth/migration/exchange."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from helpers import add_users
from tokenmigration.db.schema import tokens
from tokenmigration.engine.results import ChunkResult, Problem


def record_problems(stack, run_id: str) -> list[dict]:
    stack.ledger.record_chunk(run_id, 0, ChunkResult(chunk=0, processed_users=3, failed_users=1, problems=[
        Problem("user_locked", "the user row was locked", user_id=1),
        Problem("unknown_user", "no user with id 99", user_id=99, session_id="abcdefgh…"),
    ]))
    stack.ledger.record_chunk(run_id, 1, ChunkResult(chunk=1, processed_users=2, problems=[
        Problem("bad_value", "not JSON", session_id="zyxwvuts…"),
        Problem("user_locked", "the user row was locked", user_id=5),
        Problem("user_locked", "the user row was locked", user_id=6),
    ]))
    return [
        {"user_id": 1, "code": "user_locked", "message": "the user row was locked"},
        {"user_id": 99, "session_id": "abcdefgh…", "code": "unknown_user", "message": "no user with id 99"},
        {"user_id": None, "session_id": "zyxwvuts…", "code": "bad_value", "message": "not JSON"},
        {"user_id": 5, "code": "user_locked", "message": "the user row was locked"},
        {"user_id": 6, "code": "user_locked", "message": "the user row was locked"},
    ]


def test_errors_page_by_page(api, stack):
    run_id = api.invoke("api_start", body={"confirm": True}).body["migration_id"]
    expected = record_problems(stack, run_id)

    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        result = api.invoke("api_errors", query=query)
        assert result.status == 200
        assert result.body["success"] is True and result.body["message"]
        assert result.body["migration_id"] == run_id
        seen += result.body["errors"]
        pages += 1
        cursor = result.body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == expected  # session_id absent when the problem is not about a session

    everything = api.invoke("api_errors", query={"migration_id": run_id, "limit": "100"})
    assert everything.body["errors"] == expected and everything.body["next_cursor"] is None


def test_the_sample_event_lists_errors(api, stack):
    api.invoke("api_start", body={"confirm": True})
    result = api.invoke("api_errors")
    assert result.status == 200 and result.body["errors"] == [] and result.body["next_cursor"] is None


def test_errors_before_any_run_is_an_empty_page(api, stack):
    result = api.invoke("api_errors", query=None)
    assert result.status == 200
    assert result.body == {"success": True, "message": "No migration has been started yet", "migration_id": None,
                           "errors": [], "next_cursor": None}


def test_errors_of_an_unknown_run_is_404(api, stack):
    result = api.invoke("api_errors", query={"migration_id": "migration-20250101T000000Z-0badc0de"})
    assert result.status == 404 and result.body["success"] is False


@pytest.mark.parametrize(("query", "field"), [
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"limit": "9" * 5000}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "eyJzayI6IlJVTiMifQ"}, "cursor"),  # a well-formed cursor that points outside the errors
    ({"cursor": "x" * 2000}, "cursor"),
    ({"cursor": "é" * 1000}, "cursor"),  # 1,000 characters, but 6,000 bytes percent-encoded: not a cursor anyway
    ({"migration_id": "no spaces"}, "migration_id"),
])
def test_bad_paging_arguments_are_400(api, stack, query, field):
    api.invoke("api_start", body={"confirm": True})
    result = api.invoke("api_errors", query=query)
    assert result.status == 400, result.body
    assert field in result.body["errors"]


def test_cleanup_without_a_body_is_a_real_cleanup(api, stack, pg_engine):
    add_users(pg_engine, [1, 2])
    token_id = api.invoke("api_migrate_user", user_id=1).body["data"]["token_id"]
    with pg_engine.begin() as conn:  # the app deleted the token: the ledger row is an orphan now
        conn.execute(delete(tokens).where(tokens.c.id == token_id))

    dry = api.invoke("api_cleanup", body={"dry_run": True})
    assert dry.status == 200
    assert dry.body["dry_run"] is True and dry.body["cleaned_items"] == 1
    assert dry.body["details"]["ledger_rows"] == 1
    assert set(dry.body) == {"success", "message", "dry_run", "cleaned_items", "details", "complete",
                             "resume_after_user_id"}
    assert (dry.body["complete"], dry.body["resume_after_user_id"]) == (True, None)

    real = api.invoke("api_cleanup", body=None, drop_headers=("Content-Type",))
    assert real.status == 200 and real.body["dry_run"] is False and real.body["cleaned_items"] == 1
    assert api.invoke("api_cleanup", body={}).body["cleaned_items"] == 0


def test_a_cleanup_that_reaches_its_time_limit_says_where_to_go_on(api, stack, pg_engine, monkeypatch):
    """API Gateway gives up after 29 s: a walk too long for one call stops after a page and names the user id
    the next call continues after; every page is committed when the answer comes."""
    import tokenmigration.api.routes.cleanup as route
    import tokenmigration.engine.cleanup as cleanup_module

    add_users(pg_engine, [1, 2, 3])
    token_ids = [api.invoke("api_migrate_user", user_id=uid).body["data"]["token_id"] for uid in (1, 2, 3)]
    with pg_engine.begin() as conn:
        conn.execute(delete(tokens).where(tokens.c.id.in_(token_ids)))
    monkeypatch.setattr(route, "TIME_BUDGET_SECONDS", 0.0)
    monkeypatch.setattr(cleanup_module, "PAGE_USERS", 2)

    first = api.invoke("api_cleanup", body={})
    assert first.status == 200, first.body
    assert (first.body["complete"], first.body["resume_after_user_id"], first.body["cleaned_items"]) == (False, 2, 2)
    assert "call again with after_user_id 2 to continue" in first.body["message"]
    second = api.invoke("api_cleanup", body={"after_user_id": 2})
    assert (second.body["complete"], second.body["resume_after_user_id"], second.body["cleaned_items"]) == (
        True, None, 1)
    assert api.invoke("api_cleanup", body={"after_user_id": 0}).body["cleaned_items"] == 0


@pytest.mark.parametrize("body", [{"dry_run": "true"}, {"dry_run": 1}, {"dryrun": True}, "[true]", "{", "7",
                                  {"after_user_id": -1}, {"after_user_id": "2"}, {"after_user_id": 2.5},
                                  {"after_user_id": 2**63}])
def test_cleanup_with_a_bad_body_is_400(api, stack, body):
    result = api.invoke("api_cleanup", body=body)
    assert result.status == 400 and result.body["success"] is False and result.body["errors"]


def test_exchange_without_a_session_is_a_malformed_request(api, stack):
    result = api.invoke("api_exchange", body=None, drop_headers=("Cookie",))
    assert result.status == 400 and result.body["error"] == "invalid_request"
