"""The command line, as a user runs it: real processes, real PostgreSQL and Redis."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from helpers import add_users, express, put_session
from tokenmigration.db.schema import ledger_failures, tokens

CLI = [sys.executable, "-m", "tokenmigration.cli.main"]


@pytest.fixture
def db_engine(pg_engine):
    """The CLI's production path: PostgreSQL only here (the demo test covers SQLite)."""
    return pg_engine


def run(args, env_extra, cwd=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(env_extra)
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def env(settings):
    return {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}


def test_migrate_without_yes_and_without_a_terminal_refuses_at_once(env, db_engine):
    add_users(db_engine, [1])
    done = run(["migrate"], env)
    assert done.returncode == 2
    assert "--yes" in done.stderr
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens)).scalar_one() == 0


def test_migrate_stats_rollback_round_trip(env, db_engine, redis_client):
    add_users(db_engine, [1, 2, 3])
    put_session(redis_client, "cli-session", express(2))
    put_session(redis_client, "broken", b"not json")
    errors_file = Path(env["REDIS_URL"].rsplit("/", 1)[1] + "-errors.jsonl").absolute()
    try:
        done = run(["migrate", "--yes", "--workers", "2", "--chunk-size", "2", "--json",
                    "--errors-file", str(errors_file)], env)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert (summary["migrated_users"], summary["sessions_migrated"], summary["failed_users"]) == (3, 1, 0)
        problems = [json.loads(line) for line in errors_file.read_text().splitlines()]
        assert [p["code"] for p in problems] == ["not_json"]
    finally:
        errors_file.unlink(missing_ok=True)
    stats = json.loads(run(["stats", "--json"], env).stdout)
    assert (stats["total_users"], stats["migrated_users"], stats["migration_percentage"]) == (3, 3, 100.0)
    table = run(["migrate", "--yes"], env)
    assert table.returncode == 0 and "already_migrated" in table.stdout
    undone = run(["rollback", "--yes", "--json"], env)
    assert undone.returncode == 0, undone.stderr
    assert json.loads(undone.stdout)["tokens_revoked"] == 3


def test_migrate_exits_non_zero_when_a_user_failed(env, db_engine):
    add_users(db_engine, [1, 2])
    with db_engine.connect() as app:  # the app holds user 2's row for the whole run
        app.exec_driver_sql("SELECT id FROM users WHERE id = 2 FOR UPDATE")
        done = run(["migrate", "--yes", "--workers", "1"], {**env, "MIGRATION_LOCK_TIMEOUT_MS": "100"})
        app.rollback()
    assert done.returncode == 1
    assert "user_locked" in done.stdout
    with db_engine.connect() as conn:
        assert conn.execute(select(ledger_failures.c.user_id)).scalars().all() == [2]


def test_dry_run_needs_no_confirmation_and_writes_nothing(env, db_engine):
    add_users(db_engine, [1, 2])
    done = run(["migrate", "--dry-run", "--json"], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["migrated_users"] == 2
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens)).scalar_one() == 0


def test_cleanup_dry_run(env, db_engine):
    done = run(["cleanup", "--dry-run", "--json"], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cleaned_items"] == 0


@pytest.mark.parametrize(
    ("extra", "variable"),
    [({"LARAVEL_SESSION_SERIALIZATION": "xml"}, "LARAVEL_SESSION_SERIALIZATION"),
     ({"LARAVEL_SESSION_LIFETIME": "soon"}, "LARAVEL_SESSION_LIFETIME"),
     ({"MIGRATION_TOKEN_ABILITIES": "{}"}, "MIGRATION_TOKEN_ABILITIES"),
     ({"DATABASE_URL": ""}, "DATABASE_URL")],
)
def test_bad_configuration_names_the_variable(env, extra, variable):
    done = run(["stats"], {**env, **extra})
    assert done.returncode == 2
    assert variable in done.stderr and "Traceback" not in done.stderr


def test_unreachable_database_is_one_clear_line(env):
    done = run(["stats"], {**env, "DATABASE_URL": "postgresql+pg8000://nobody:secretpw@127.0.0.1:1/x"})
    assert done.returncode == 2
    assert "cannot reach the database" in done.stderr
    assert "secretpw" not in done.stderr and "Traceback" not in done.stderr


def test_schema_not_upgraded_is_explained(env, db_engine):
    with db_engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE token_migration_tokens")
    done = run(["migrate", "--yes"], env)
    assert done.returncode == 2 and "db upgrade" in done.stderr
    upgraded = run(["db", "upgrade"], env)
    assert upgraded.returncode == 0 and "token_migration_tokens" in upgraded.stdout
    assert "already up to date" in run(["db", "upgrade"], env).stdout


def test_demo_on_embedded_defaults(tmp_path):
    """The demo's own "all checks passed" is not the evidence: its database is read here, independently."""
    done = run(["demo", "--users", "300"], {}, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all checks passed" in done.stdout and "FAIL" not in done.stdout
    database = tmp_path / ".tokenmigration" / "demo.sqlite"
    with sqlite3.connect(database) as conn:
        users = dict(conn.execute("SELECT id, migration_token_id FROM users WHERE migrated_to_sanctum_at IS NOT NULL"))
        everyone = {row[0] for row in conn.execute("SELECT id FROM users")}
        tokens_by_name: dict[str, list[tuple[int, int]]] = {}
        for token_id, owner, name in conn.execute("SELECT id, tokenable_id, name FROM personal_access_tokens"):
            tokens_by_name.setdefault(name, []).append((token_id, owner))
        session_rows = conn.execute("SELECT user_id, payload FROM sessions").fetchall()
        ledgered = conn.execute("SELECT COUNT(*) FROM token_migration_sessions").fetchone()[0]
    assert len(everyone) == 300
    holders = {owner for _, owner in tokens_by_name.get("app-token", [])}
    assert holders and not holders & set(users), "users holding app tokens get no migration token"
    assert set(users) == everyone - holders, "everyone else is migrated"
    # Each migrated user points at exactly one migration token, their own.
    assert sorted(tokens_by_name["migration-token"]) == sorted((token, user) for user, token in users.items())
    assert session_rows and len(session_rows) == ledgered
    for user_id, payload in session_rows:
        attributes = base64.b64decode(payload).decode()
        assert user_id in everyone and f'login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d";i:{user_id};' in attributes


def test_demo_refuses_a_database_with_real_users(env, db_engine):
    add_users(db_engine, [1])  # example.test addresses: not demo users
    done = run(["demo", "--users", "50"], env)
    assert done.returncode == 2 and "not demo users" in done.stdout
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens)).scalar_one() == 0


def test_demo_on_configured_services_runs_twice(env, db_engine, redis_client):
    with db_engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM users")
    for _ in range(2):
        done = run(["demo", "--users", "200"], env)
        assert done.returncode == 0, done.stdout + done.stderr
    assert not list(redis_client.scan_iter(match="sess:*"))  # the demo keeps to its own prefix
