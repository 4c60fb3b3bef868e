"""POST /auth/migration/user/{userId} and /user/{userId}/rollback against the real database."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from helpers import add_app_token, add_users, express, ledgered_token_rows, put_session, snapshot
from tokenmigration.db.schema import ledger_tokens, tokens, users


def user_row(engine, user_id):
    with engine.connect() as conn:
        return conn.execute(select(users).where(users.c.id == user_id)).one()


def test_migrate_one_user(api, stack, pg_engine):
    add_users(pg_engine, [7, 8])
    result = api.invoke("api_migrate_user", user_id=7)

    assert result.status == 200
    assert result.body["success"] is True and result.body["message"]
    data = result.body["data"]
    assert set(data) == {"token_id", "token_name", "sessions_migrated"}
    assert data["token_name"] == "migration-token" and data["sessions_migrated"] == 0
    row = user_row(pg_engine, 7)
    assert row.migrated_to_sanctum_at is not None and row.migration_token_id == data["token_id"]
    with pg_engine.connect() as conn:
        token = conn.execute(select(tokens).where(tokens.c.id == data["token_id"])).one()
        ledger = conn.execute(select(ledger_tokens).where(ledger_tokens.c.user_id == 7)).one()
    assert token.tokenable_id == 7 and token.name == "migration-token"
    assert ledger.token_id == data["token_id"] and ledger.run_id.startswith("user-")
    assert user_row(pg_engine, 8).migrated_to_sanctum_at is None


def test_the_sample_event_migrates_user_42(api, stack, pg_engine):
    add_users(pg_engine, [42])
    before = snapshot(pg_engine)
    migrated = api.invoke("api_migrate_user")
    assert migrated.status == 200
    token_id = migrated.body["data"]["token_id"]
    row = user_row(pg_engine, 42)
    assert row.migrated_to_sanctum_at is not None and row.migration_token_id == token_id
    with pg_engine.connect() as conn:
        assert conn.execute(select(tokens.c.tokenable_id).where(tokens.c.id == token_id)).scalar_one() == 42
        assert conn.execute(select(ledger_tokens.c.token_id).where(ledger_tokens.c.user_id == 42)).scalar_one() \
            == token_id
    rolled_back = api.invoke("api_rollback_user")
    assert (rolled_back.status, rolled_back.body["data"]) == (200, {"tokens_revoked": 1, "sessions_removed": 0})
    assert snapshot(pg_engine) == before  # the three tables exactly as they were


def test_single_user_migration_carries_no_sessions(api, stack, pg_engine, redis_client):
    """connect-redis has no per-user index: the route never SCANs the store (documented in the OpenAPI)."""
    add_users(pg_engine, [5])
    put_session(redis_client, "abc", express(5))
    result = api.invoke("api_migrate_user", user_id=5)
    assert result.status == 200 and result.body["data"]["sessions_migrated"] == 0


def test_unknown_user_is_404(api, stack, pg_engine):
    add_users(pg_engine, [1])
    before = snapshot(pg_engine)
    for name in ("api_migrate_user", "api_rollback_user"):
        result = api.invoke(name, user_id=999)
        assert result.status == 404
        assert result.body == {"success": False, "message": "no user with id 999"}
    assert snapshot(pg_engine) == before  # nothing written for anyone
    with pg_engine.connect() as conn:
        assert ledgered_token_rows(conn) == []


def test_already_migrated_is_409(api, stack, pg_engine):
    add_users(pg_engine, [3])
    first = api.invoke("api_migrate_user", user_id=3)
    second = api.invoke("api_migrate_user", user_id=3)
    assert second.status == 409 and second.body["success"] is False
    assert "already migrated" in second.body["message"]
    assert user_row(pg_engine, 3).migration_token_id == first.body["data"]["token_id"]


def test_a_user_holding_tokens_is_409(api, stack, pg_engine):
    add_users(pg_engine, [4])
    add_app_token(pg_engine, 4)
    result = api.invoke("api_migrate_user", user_id=4)
    assert result.status == 409 and "tokens" in result.body["message"]
    assert user_row(pg_engine, 4).migrated_to_sanctum_at is None


def test_rollback_one_user(api, stack, pg_engine):
    add_users(pg_engine, [6])
    token_id = api.invoke("api_migrate_user", user_id=6).body["data"]["token_id"]

    result = api.invoke("api_rollback_user", user_id=6)

    assert result.status == 200
    assert result.body["data"] == {"tokens_revoked": 1, "sessions_removed": 0}
    row = user_row(pg_engine, 6)
    assert row.migrated_to_sanctum_at is None and row.migration_token_id is None
    with pg_engine.connect() as conn:
        assert conn.execute(select(tokens).where(tokens.c.id == token_id)).first() is None
    # And the user can be migrated again.
    assert api.invoke("api_migrate_user", user_id=6).status == 200


def test_rollback_of_a_user_not_migrated_is_409(api, stack, pg_engine):
    add_users(pg_engine, [9])
    app_token = add_app_token(pg_engine, 9)
    result = api.invoke("api_rollback_user", user_id=9)
    assert result.status == 409 and "not migrated" in result.body["message"]
    with pg_engine.connect() as conn:  # the app's own token is never touched
        assert conn.execute(select(tokens).where(tokens.c.id == app_token)).first() is not None


NOT_POSITIVE_INTEGERS = ["0", "-1", "abc", "1.0", "+5", "1e3", "0x10", "1_000", " 7", "٣", "9" * 19, "9" * 40,
                         "92233720368547758070", "%20", "null", "true", "007x"]


@pytest.mark.parametrize("name", ["api_migrate_user", "api_rollback_user"])
def test_a_user_id_that_is_not_a_positive_integer_is_400(api, stack, pg_engine, name):
    add_users(pg_engine, [7, 10])
    for user_id in NOT_POSITIVE_INTEGERS:
        result = api.invoke(name, user_id=user_id)
        assert result.status == 400, (user_id, result.body)
        assert result.body["success"] is False
        assert list(result.body["errors"]) == ["userId"], user_id


def test_the_largest_bigint_is_a_valid_id(api, stack, pg_engine):
    result = api.invoke("api_migrate_user", user_id=str(2**63 - 1))
    assert result.status == 404
