"""Checks of a migrated database against what unmodified Laravel accepts (demo and tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Engine, select

from tokenmigration.config import Settings
from tokenmigration.db.schema import sessions, tokens, users
from tokenmigration.engine import ledger
from tokenmigration.engine.session_store import RedisSessionStore
from tokenmigration.formats import sanctum
from tokenmigration.formats.laravel_session import (
    LOGIN_WEB_KEY,
    decode_payload,
    decode_redis_value,
    is_valid_session_id,
)


@dataclass(frozen=True, slots=True)
class _Session:
    id: str
    user_id: int
    payload: bytes
    owner: int | None


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def verify_migrated(engine: Engine, settings: Settings, session_store: RedisSessionStore | None = None
                    ) -> list[Check]:
    """Every migrated user has one well-formed migration token, and every session this tool made (a row in
    ``sessions``, or with ``session_store`` a key in Laravel's Redis) is Laravel-readable and logs in an
    existing user (skipped users' sessions included: skipping is about the token only)."""
    with engine.connect() as conn:
        migrated = dict(conn.execute(
            select(users.c.id, users.c.migration_token_id).where(users.c.migrated_to_sanctum_at.is_not(None))
        ).all())
        our_tokens = conn.execute(
            select(tokens.c.id, tokens.c.tokenable_id, tokens.c.tokenable_type, tokens.c.name, tokens.c.token,
                   tokens.c.abilities, tokens.c.created_at)
            .where(tokens.c.id.in_(ledger.token_ids(conn)))
        ).all()
        if session_store is None:
            our_sessions = conn.execute(
                select(sessions.c.id, sessions.c.user_id, sessions.c.payload, users.c.id.label("owner"))
                .outerjoin(users, users.c.id == sessions.c.user_id)
                .where(sessions.c.id.in_(ledger.session_ids(conn)))
            ).all()
        else:
            rows = ledger.session_rows(conn)
            ledgered = conn.execute(
                select(rows.c.session_id, rows.c.user_id, users.c.id.label("owner"))
                .outerjoin(users, users.c.id == rows.c.user_id)
            ).all()
    checks: list[Check] = []
    token_users = [t.tokenable_id for t in our_tokens]
    checks.append(Check(
        "one migration token per migrated user",
        sorted(token_users) == sorted(migrated) and len(set(token_users)) == len(token_users),
        f"{len(our_tokens):,} tokens for {len(migrated):,} migrated users",
    ))
    bad_tokens = [
        t.id for t in our_tokens
        if not (len(t.token) == 64 and all(c in "0123456789abcdef" for c in t.token)
                and t.tokenable_type == settings.sanctum_tokenable_type and t.name == settings.migration_token_name
                and isinstance(json.loads(t.abilities or "null"), list) and t.created_at is not None
                and migrated.get(t.tokenable_id) == t.id)
    ]
    checks.append(Check("tokens shaped as Sanctum stores them", not bad_tokens,
                        f"{len(bad_tokens)} malformed" if bad_tokens else "sha256 hashes, JSON abilities, "
                        "timestamps set, users.migration_token_id points at them"))
    app_key = settings.session_app_key()
    if session_store is not None:
        values = session_store.get_many([sid for sid, _, _ in ledgered])
        our_sessions = [_Session(sid, uid, value, owner)
                        for (sid, uid, owner), value in zip(ledgered, values, strict=True) if value is not None]
    bad_sessions = []
    for row in our_sessions:
        try:
            if session_store is None:
                attrs = decode_payload(row.payload, settings.laravel_session_serialization, app_key)
            else:
                attrs = decode_redis_value(row.payload, settings.laravel_session_serialization, app_key)
        except ValueError:
            bad_sessions.append(row.id)
            continue
        token = attrs.get("_token")
        if not (is_valid_session_id(row.id) and attrs.get(LOGIN_WEB_KEY) == row.user_id
                and row.owner is not None and isinstance(token, str) and len(token) == 40
                and not any(k.startswith("password_hash") for k in attrs)):
            bad_sessions.append(row.id)
    checks.append(Check("sessions readable by Laravel", not bad_sessions,
                        f"{len(bad_sessions)} unreadable" if bad_sessions else
                        f"{len(our_sessions):,} rows: 40-char ids, login_web_ key holds the user id"))
    return checks


def token_verifies(engine: Engine, bearer: str) -> bool:
    """Sanctum's ``PersonalAccessToken::findToken`` against the database."""
    token_id, secret = sanctum.split_bearer(bearer)
    with engine.connect() as conn:
        if token_id is None:
            row = conn.execute(select(tokens.c.token).where(tokens.c.token == sanctum.hash_token(secret))).first()
        else:
            row = conn.execute(select(tokens.c.token).where(tokens.c.id == token_id)).first()
    return row is not None and sanctum.token_matches(row.token, secret)
