"""Small builders shared by the tests: rows and Express sessions as the real apps write them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Engine, insert, select, text

from tokenmigration.db.schema import laravel_tokens, laravel_users, sessions, tokens
from tokenmigration.formats import sanctum


def add_users(engine: Engine, ids: list[int]) -> None:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    with engine.begin() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            # The tests use user id 0 (a logged-in user too); MySQL would read it as "next id".
            conn.execute(text("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')"))
        conn.execute(insert(laravel_users), [
            {"id": i, "name": f"u{i}", "email": f"u{i}@example.test", "password": "x", "created_at": now,
             "updated_at": now} for i in ids
        ])


def add_app_token(engine: Engine, user_id: int, name: str = "app-token") -> int:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    with engine.begin() as conn:
        # No RETURNING: MySQL has none.
        return conn.execute(insert(laravel_tokens).values(
            tokenable_type="App\\Models\\User", tokenable_id=user_id, name=name,
            token=sanctum.mint_token().hash, abilities='["*"]', created_at=now, updated_at=now,
        )).inserted_primary_key[0]


def express(user: object = None, **extra: object) -> bytes:
    doc: dict = {"cookie": {"originalMaxAge": 86400000, "expires": "2030-01-01T00:00:00.000Z",
                            "httpOnly": True, "path": "/"}}
    if user is not None:
        doc["passport"] = {"user": user}
    doc.update(extra)
    return json.dumps(doc).encode()


def put_session(redis, sid: str, value: bytes, prefix: str = "sess:", ttl: int = 3600) -> None:
    redis.set(prefix + sid, value, ex=ttl)


def snapshot(engine: Engine) -> dict[str, list]:
    """Every row of the three Laravel tables this tool touches, for exact before/after comparisons."""
    with engine.connect() as conn:
        return {
            "users": [tuple(r) for r in conn.execute(text("SELECT * FROM users ORDER BY id"))],
            "tokens": [tuple(r) for r in conn.execute(select(tokens).order_by(tokens.c.id))],
            "sessions": [tuple(r) for r in conn.execute(select(sessions).order_by(sessions.c.id))],
        }


def cleanup_fails_from_user(monkeypatch, first_failing: int):
    """Make cleanup's pages fail from the page that starts at ``first_failing`` (a database that went away
    midway); returns the real page function, to put back with monkeypatch.setattr."""
    import tokenmigration.engine.cleanup as cleanup_module

    real_page = cleanup_module._clean_page

    def failing(conn, lo, hi, *rest):
        if lo >= first_failing:
            raise RuntimeError("the database went away")
        return real_page(conn, lo, hi, *rest)

    monkeypatch.setattr(cleanup_module, "_clean_page", failing)
    return real_page


def ledgered_token_rows(conn) -> list[tuple[int, int, str]]:
    """(user_id, token_id, run_id) of every token the ledger names, per-token and packed rows alike."""
    from tokenmigration.db.schema import ledger_packed, ledger_tokens

    rows = [(int(u), int(t), r) for u, t, r in conn.execute(
        select(ledger_tokens.c.user_id, ledger_tokens.c.token_id, ledger_tokens.c.run_id))]
    rows += [(int(u), int(t), r) for u, t, r in conn.execute(
        select(ledger_packed.c.user_id, ledger_packed.c.token_id, ledger_packed.c.run_id)
        .where(ledger_packed.c.token_id.is_not(None)))]
    return sorted(rows)


def ledgered_session_rows(conn) -> list[tuple[int, str, str | None, str]]:
    """(user_id, session_id, source_hash, run_id) of every session row the ledger names, per-session and
    packed rows alike. Read from the tables and split here, not through engine/ledger.py, so tests built on
    it check that reader too."""
    from tokenmigration.db.schema import ledger_packed, ledger_sessions

    rows = [(int(u), s, h, r) for u, s, h, r in conn.execute(
        select(ledger_sessions.c.user_id, ledger_sessions.c.session_id, ledger_sessions.c.source_hash,
               ledger_sessions.c.run_id))]
    for packed in conn.execute(select(ledger_packed).where(ledger_packed.c.session_ids.is_not(None))):
        rows += [(int(packed.user_id), sid, sh, packed.run_id) for sid, sh in _packed_entries(packed)]
    return sorted(rows)


def _packed_entries(packed) -> list[tuple[str, str]]:
    """A packed row's (session id, source hash) pairs, split here rather than by engine/ledger.py."""
    ids, hashes = packed.session_ids.split(","), packed.source_hashes.split(",")
    assert len(ids) == len(hashes), f"user {packed.user_id}: {len(ids)} sessions, {len(hashes)} hashes"
    return list(zip(ids, hashes, strict=True))


class _LedgeredSession(NamedTuple):
    user_id: int
    session_id: str
    run_id: str
    source_hash: str | None
    created_at: datetime


def ledgered_sessions_of(conn, user_id: int) -> list[_LedgeredSession]:
    """The session rows the ledger names for one user, per-session and packed rows alike, each with every
    column of ``token_migration_sessions`` (user_id, session_id, run_id, source_hash, created_at) as
    attributes; a packed row counts as one row per session it names, stamped with the packed row's run and
    time, which is what unpacking it would write."""
    from tokenmigration.db.schema import ledger_packed, ledger_sessions

    rows = list(conn.execute(select(ledger_sessions).where(ledger_sessions.c.user_id == user_id)))
    for packed in conn.execute(select(ledger_packed).where(ledger_packed.c.user_id == user_id,
                                                           ledger_packed.c.session_ids.is_not(None))):
        rows += [_LedgeredSession(packed.user_id, sid, packed.run_id, sh, packed.created_at)
                 for sid, sh in _packed_entries(packed)]
    return sorted((_LedgeredSession(*row) for row in rows), key=lambda r: (r.session_id, r.run_id))


def reset_database(engine: Engine) -> None:
    """Drop every table this tool and Laravel have, then create them again as `db upgrade` leaves them."""
    from tokenmigration.db.schema import laravel_metadata, own_metadata
    from tokenmigration.db.upgrade import create_laravel_tables, upgrade

    with engine.begin() as conn:
        for table in reversed(own_metadata.sorted_tables + laravel_metadata.sorted_tables):
            conn.execute(text(f"DROP TABLE IF EXISTS {table.name}"))
    create_laravel_tables(engine)
    upgrade(engine)
