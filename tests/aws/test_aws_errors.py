"""Paging through a run's problems with opaque cursors."""

from __future__ import annotations

import base64
import json

import pytest

from tokenmigration.aws.cursor import encode_cursor
from tokenmigration.aws.errors import BadCursor, UnknownRun
from tokenmigration.aws.runs import RunLedger
from tokenmigration.engine.results import ChunkResult, Problem


@pytest.fixture
def five_errors(ledger: RunLedger) -> str:
    ledger.create_run("m", "migration", dry_run=False)
    for chunk in (0, 1):
        problems = [Problem("user_locked", f"user {chunk * 10 + n} is locked", user_id=chunk * 10 + n)
                    for n in range(2)]
        ledger.record_chunk("m", chunk, ChunkResult(chunk=chunk, processed_users=2, failed_users=2,
                                                    problems=problems))
    ledger.record_plan_problems("m", [Problem("bad_session", "value is not JSON", session_id="s3cr3tid…")])
    return "m"


def test_pages_of_two_over_five(ledger: RunLedger, five_errors: str):
    seen, cursor, pages = [], None, 0
    while True:
        errors, cursor = ledger.errors(five_errors, limit=2, cursor=cursor)
        pages += 1
        seen.extend(errors)
        assert len(errors) == (2 if cursor else 1)
        if cursor is None:
            break
        assert isinstance(cursor, str) and "=" not in cursor
    assert pages == 3
    assert [e.get("user_id") for e in seen] == [0, 1, 10, 11, None]
    assert seen[0] == {"user_id": 0, "code": "user_locked", "message": "user 0 is locked"}
    assert seen[-1] == {"user_id": None, "session_id": "s3cr3tid…", "code": "bad_session",
                        "message": "value is not JSON"}


def test_an_exact_last_page_has_no_cursor(ledger: RunLedger, five_errors: str):
    errors, cursor = ledger.errors(five_errors, limit=5)
    assert len(errors) == 5 and cursor is None
    errors, cursor = ledger.errors(five_errors)  # default limit 50
    assert len(errors) == 5 and cursor is None


@pytest.mark.parametrize("cursor", [
    "not a cursor!",
    "",
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    base64.urlsafe_b64encode(b"[1, 2]").decode(),
    base64.urlsafe_b64encode(json.dumps({"sk": 5}).encode()).decode(),
    encode_cursor("CHUNK#000000001"),  # a real key, but not an error: a cursor cannot reach other items
    "x" * 5000,
])
def test_a_bad_cursor_is_refused(ledger: RunLedger, five_errors: str, cursor: str):
    with pytest.raises(BadCursor):
        ledger.errors(five_errors, limit=2, cursor=cursor)


@pytest.mark.parametrize("limit", [0, 101, -1, True, "2"])
def test_limit_is_1_to_100(ledger: RunLedger, five_errors: str, limit):
    with pytest.raises(ValueError, match="limit"):
        ledger.errors(five_errors, limit=limit)


def test_a_run_without_problems_and_an_unknown_run(ledger: RunLedger):
    ledger.create_run("clean", "migration", dry_run=False)
    assert ledger.errors("clean") == ([], None)
    with pytest.raises(UnknownRun):
        ledger.errors("missing")
