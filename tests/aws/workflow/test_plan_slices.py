"""The plan's scan in bounded slices, looped by the real migration state machine in moto's interpreter.

Tiny slices (one SCAN call of ~5 keys each) must build exactly the index, the counts, the plan problems and
the migration that one slice builds: the loop neither loses nor double-counts a session.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import Engine
from stack import AwsStack

from helpers import reset_database
from tokenmigration.aws.context import reset_services
from tokenmigration.demo_data import seed
from tokenmigration.engine.migrator import Migrator

USERS = 60
CHUNK_SIZE = 7
SLICE_STATE = "Index one slice of sessions"


def _seed(engine: Engine, redis_client) -> int:
    redis_client.flushdb()
    reset_database(engine)
    seed(engine, redis_client, users=USERS, seed_value=11, token_share=0.1)
    return redis_client.dbsize()


def _run(aws_stack: AwsStack, monkeypatch, indexes: dict[str, dict], **env: str) -> dict:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_services()  # the settings are read once per warm container
    done = aws_stack.run("migration", chunk_size=CHUNK_SIZE, max_concurrency=3)
    assert done["status"] == "SUCCEEDED", done
    run_id = done["run_id"]
    progress = aws_stack.ledger.progress(run_id)
    errors, cursor = [], None
    while True:
        page, cursor = aws_stack.ledger.errors(run_id, limit=100, cursor=cursor)
        errors += page
        if cursor is None:
            break
    history = aws_stack.history(done["executionArn"])
    slices = [e for e in history if e.get("stateEnteredEventDetails", {}).get("name") == SLICE_STATE]
    return {
        "index": indexes[run_id],
        "counts": {k: progress[k] for k in ("total_users", "processed_users", "migrated_users", "skipped_users",
                                             "failed_migrations", "sessions_migrated", "total_batches")},
        "errors": Counter(json.dumps(e, sort_keys=True) for e in errors),
        "slices": len(slices),
        "keys_seen": indexes[run_id + ":keys_seen"],
    }


@pytest.fixture
def captured_indexes(monkeypatch) -> dict:
    """Each run's session index, as its chunks read it, captured just before finalize drops it."""
    captured: dict = {}
    original = Migrator.discard_index

    def capture(self, run_id, chunks):
        store = self.index_store(run_id)
        captured[run_id] = {c.number: sorted((s.session_id, s.user_id, s.ip_address, s.user_agent)
                                             for s in store.read(c.number)) for c in chunks}
        captured[run_id + ":keys_seen"] = int(store.client.get(store.complete_key).split(b":")[0])  # keys:slice map
        return original(self, run_id, chunks)

    monkeypatch.setattr(Migrator, "discard_index", capture)
    return captured


def test_tiny_slices_build_the_same_index_and_counts_as_one_slice(aws_stack, pg_engine, redis_client,
                                                                  monkeypatch, captured_indexes):
    keys = _seed(pg_engine, redis_client)
    one = _run(aws_stack, monkeypatch, captured_indexes)

    keys_again = _seed(pg_engine, redis_client)  # the same users and sessions, not yet migrated
    assert keys_again == keys
    tiny = _run(aws_stack, monkeypatch, captured_indexes, PLAN_SLICE_SECONDS="0", PLAN_SCAN_COUNT="5")

    assert one["slices"] == 1
    # One SCAN call per slice, ~5 keys each: many slices, every one a separate Lambda invocation.
    assert tiny["slices"] >= keys // 10
    assert tiny["index"] == one["index"] and sum(map(len, one["index"].values())) > USERS
    assert tiny["keys_seen"] == one["keys_seen"] == keys
    assert tiny["counts"] == one["counts"] and one["counts"]["sessions_migrated"] > 0
    assert tiny["errors"] == one["errors"] and one["errors"]  # the seed's odd sessions are plan problems


def test_a_retried_slice_changes_nothing(aws_stack, pg_engine, redis_client, monkeypatch, captured_indexes):
    """A slice that ran and whose answer was lost (Lambda.ServiceException after the handler) runs again."""
    from stack import Fault

    keys = _seed(pg_engine, redis_client)
    aws_stack.faults.append(Fault("wf_plan", when=lambda e: e.get("phase") == "slice" and e["slice"] in (2, 5),
                                  after=True, times=2))
    retried = _run(aws_stack, monkeypatch, captured_indexes, PLAN_SLICE_SECONDS="0", PLAN_SCAN_COUNT="5")
    assert sum(f.fired for f in aws_stack.faults) == 2
    aws_stack.faults.clear()

    _seed(pg_engine, redis_client)
    clean = _run(aws_stack, monkeypatch, captured_indexes, PLAN_SLICE_SECONDS="0", PLAN_SCAN_COUNT="5")

    assert retried["keys_seen"] == clean["keys_seen"] == keys
    assert retried["index"] == clean["index"]
    assert retried["counts"] == clean["counts"] and retried["errors"] == clean["errors"]
