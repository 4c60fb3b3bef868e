"""Realistic demo data: Laravel users and connect-redis sessions, odd values included.

Used by ``tokenmigration demo``, the benchmark and the tests. Never point it at
production: it inserts users and session keys.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, insert, select, text

from tokenmigration.db.schema import laravel_users, tokens
from tokenmigration.formats import sanctum
from tokenmigration.redis_client import RedisLike

DEMO_EMAIL_DOMAIN = "demo.tokenmigration.test"
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 — ünïcödé build",
]
ODD_VALUES = {
    "null_value": b"null",
    "empty_value": b"",
    "not_json": b"s:not json at all{",
    "not_an_object": b"[]",
    "invalid_cookie": b'{"cookie":null,"passport":{"user":1}}',
    "invalid_user_id": b'{"cookie":{"originalMaxAge":86400000,"expires":null,"httpOnly":true,"path":"/"},'
                       b'"passport":{"user":"not-a-number"}}',
}


@dataclass(slots=True)
class SeedReport:
    users: int = 0
    user_ids: list[int] = field(default_factory=list)
    sessions: Counter[str] = field(default_factory=Counter)
    sessions_by_user: dict[int, int] = field(default_factory=dict)
    users_with_tokens: list[int] = field(default_factory=list)
    orphan_user_ids: list[int] = field(default_factory=list)


def sparse_ids(count: int, start: int = 1) -> list[int]:
    """Strictly increasing ids with gaps, as years of deleted accounts leave them."""
    return [start + g * 3 + g % 3 for g in range(count)]


def session_id(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(rng.choice(alphabet) for _ in range(32))


def express_session(rng: random.Random, user_id: int | None) -> dict:
    expires = datetime.now(UTC) + timedelta(days=rng.randint(1, 14))
    doc: dict = {"cookie": {"originalMaxAge": 1209600000, "expires": expires.isoformat().replace("+00:00", "Z"),
                            "httpOnly": True, "path": "/"}}
    if user_id is None:
        doc["flash"] = {}
        return doc
    shape = rng.random()
    if shape < 0.6:
        doc["passport"] = {"user": user_id}
    elif shape < 0.8:
        doc["passport"] = {"user": str(user_id)}
    else:
        doc["passport"] = {"user": {"id": user_id, "username": f"user{user_id}"}}
    if rng.random() < 0.7:
        doc["ip"] = f"203.0.113.{rng.randint(1, 254)}" if rng.random() < 0.8 else f"2001:db8::{rng.randint(1, 9999):x}"
        doc["userAgent"] = rng.choice(USER_AGENTS)
    return doc


def insert_users(engine: Engine, ids: list[int]) -> None:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    rows = [{"id": i, "name": f"User {i}", "email": f"user{i}@{DEMO_EMAIL_DOMAIN}", "password": "$2y$12$demo",
             "created_at": now, "updated_at": now} for i in ids]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for start in range(0, len(rows), 20000):
                doc = json.dumps([{**r, "created_at": str(now), "updated_at": str(now)}
                                  for r in rows[start : start + 20000]])
                conn.execute(text(
                    "INSERT INTO users (id, name, email, password, created_at, updated_at) "
                    "SELECT id, name, email, password, created_at, updated_at FROM json_to_recordset(CAST(:d AS json)) "
                    "AS r(id bigint, name text, email text, password text, created_at timestamp, updated_at timestamp)"
                ), {"d": doc})
            # Keep the app's own inserts working after explicit ids.
            conn.execute(text("SELECT setval(pg_get_serial_sequence('users', 'id'), "
                              "(SELECT coalesce(max(id), 1) FROM users))"))
        else:
            conn.execute(insert(laravel_users), rows)


def seed(engine: Engine, redis: RedisLike, users: int, prefix: str = "sess:", seed_value: int = 42,
         max_sessions: int = 4, token_share: float = 0.02, start_id: int | None = None) -> SeedReport:
    """Insert ``users`` users and their Express sessions, plus anonymous, orphaned and odd ones."""
    rng = random.Random(seed_value)
    if start_id is None:
        with engine.connect() as conn:
            start_id = (conn.execute(select(func.max(laravel_users.c.id))).scalar() or 0) + 1
    ids = sparse_ids(users, start_id)
    insert_users(engine, ids)
    report = SeedReport(users=users, user_ids=ids)

    # A few users already hold a token the app made: migration must skip them and keep it.
    holders = [uid for uid in ids if rng.random() < token_share]
    if holders:
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        minted = sanctum.mint_tokens(len(holders))
        with engine.begin() as conn:
            conn.execute(insert(tokens), [
                {"tokenable_type": "App\\Models\\User", "tokenable_id": uid, "name": "app-token",
                 "token": tok.hash, "abilities": '["*"]', "created_at": now, "updated_at": now}
                for uid, tok in zip(holders, minted, strict=True)
            ])
    report.users_with_tokens = holders

    pipe = redis.pipeline(transaction=False)
    pending = 0

    def put(value: bytes) -> None:
        nonlocal pending
        pipe.set(f"{prefix}{session_id(rng)}", value, ex=rng.randint(3600, 14 * 86400))
        pending += 1
        if pending >= 5000:
            pipe.execute()
            pending = 0

    for uid in ids:
        count = rng.randint(0, max_sessions)
        report.sessions_by_user[uid] = count
        for _ in range(count):
            put(json.dumps(express_session(rng, uid)).encode())
        report.sessions["logged_in"] += count
    anonymous = max(1, users // 10)
    for _ in range(anonymous):
        put(json.dumps(express_session(rng, None)).encode())
    report.sessions["anonymous"] = anonymous
    orphans = [ids[-1] + 1000 + i for i in range(max(1, users // 100))]
    for uid in orphans:
        put(json.dumps(express_session(rng, uid)).encode())
    report.orphan_user_ids = orphans
    report.sessions["orphaned"] = len(orphans)
    for _ in range(max(1, users // 600)):
        for kind, value in ODD_VALUES.items():
            put(value)
            report.sessions[kind] += 1
    pipe.execute()
    return report
