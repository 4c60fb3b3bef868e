"""Small builders shared by the tests: rows and Express sessions as the real apps write them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

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
