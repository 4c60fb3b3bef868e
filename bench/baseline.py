"""The baseline: the original PHP sketch's per-user migration, ported statement for statement.

The sketch walked the users one at a time, each in its own transaction, and
talked to the database the way an ORM does: one statement per round trip.
This port keeps that shape on purpose (it is what the engine is measured
against), and uses the project's own format helpers so that the rows it writes
are the same rows the engine writes:

    BEGIN
    SELECT EXISTS (token of this user)           -- a user holding one is skipped
    INSERT INTO personal_access_tokens ... RETURNING id
    INSERT INTO sessions ...                     -- once per live Express session
    UPDATE users SET migrated_to_sanctum_at, migration_token_id
    COMMIT

The sketch had no per-user index of Express sessions (connect-redis keeps
none), so the baseline is given one for free: a single SCAN + MGET pass before
the loop, counted in its time. It does not write the engine's ledger tables;
that is work the engine does and the baseline is spared.

Run on its own: ``python bench/baseline.py DATABASE_URL REDIS_URL [--users N]``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from sqlalchemy import Connection, text

from tokenmigration.db.connection import make_engine
from tokenmigration.formats import sanctum
from tokenmigration.formats.express import SessionDecoder, SessionKind
from tokenmigration.formats.laravel_session import (
    PayloadFactory,
    clean_ip,
    clean_user_agent,
    new_session_ids,
)
from tokenmigration.formats.randomness import random_alnum
from tokenmigration.redis_client import glob_escape

TOKENABLE_TYPE = "App\\Models\\User"
TOKEN_NAME = "migration-token"  # the engine's default MIGRATION_TOKEN_NAME, so rows compare equal
ABILITIES = '["*"]'
SCAN_COUNT = 2000
READ_BATCH = 1000


@dataclass(frozen=True, slots=True)
class FoundSession:
    ip_address: str | None
    user_agent: str | None


@dataclass(slots=True)
class BaselineResult:
    users: int = 0  # users walked (migrated + skipped)
    migrated: int = 0
    skipped_has_token: int = 0
    sessions_written: int = 0
    session_keys_scanned: int = 0
    last_user_id: int | None = None  # the highest user id walked: the range to verify against
    scan_seconds: float = 0.0
    loop_seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.scan_seconds + self.loop_seconds

    @property
    def seconds_per_user(self) -> float:
        return self.loop_seconds / self.users if self.users else 0.0


SessionMap = dict[int, list[FoundSession]]


def build_session_map(client: redis.Redis, prefix: str = "sess:",
                      user_id_path: str = "passport.user") -> tuple[SessionMap, dict[str, int]]:
    """One SCAN of the session keyspace plus batched GETs: user id -> that user's live sessions."""
    decoder = SessionDecoder(user_id_path)
    by_user: dict[int, list[FoundSession]] = defaultdict(list)
    kinds: dict[str, int] = defaultdict(int)
    keys: list[bytes] = []

    def read(batch: list[bytes]) -> None:
        for value in client.mget(batch):
            if value is None:
                continue  # expired between SCAN and GET
            parsed = decoder.parse(value)
            kinds[str(parsed.kind)] += 1
            if parsed.kind is SessionKind.LOGGED_IN and parsed.user_id is not None:
                by_user[parsed.user_id].append(FoundSession(parsed.ip_address, parsed.user_agent))

    for key in client.scan_iter(match=glob_escape(prefix) + "*", count=SCAN_COUNT):
        keys.append(key)
        if len(keys) >= READ_BATCH:
            read(keys)
            keys = []
    if keys:
        read(keys)
    return by_user, dict(kinds)


def migrate_one(conn: Connection, payloads: PayloadFactory, user_id: int,
                found: list[FoundSession]) -> int | None:
    """Migrate one user in its own transaction; return how many sessions were written, None if skipped."""
    with conn.begin():
        holds_token = conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM personal_access_tokens "
                 "WHERE tokenable_type = :type AND tokenable_id = :uid)"),
            {"type": TOKENABLE_TYPE, "uid": user_id},
        ).scalar()
        if holds_token:
            # The sketch leaves users who already hold a token alone, as the engine does.
            return None
        # Laravel stores naive UTC timestamps; Sanctum needs created_at/updated_at set.
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        token = sanctum.mint_token()
        insert_token = ("INSERT INTO personal_access_tokens "
                        "(tokenable_type, tokenable_id, name, token, abilities, created_at, updated_at) "
                        "VALUES (:type, :uid, :name, :hash, :abilities, :now, :now)")
        values = {"type": TOKENABLE_TYPE, "uid": user_id, "name": TOKEN_NAME, "hash": token.hash,
                  "abilities": ABILITIES, "now": now}
        # As Laravel's query processors fetch the id: RETURNING on PostgreSQL, lastInsertId elsewhere
        # (on MySQL it comes back in the INSERT's OK packet: no extra round trip either way).
        if conn.dialect.name == "postgresql":
            token_id = conn.execute(text(insert_token + " RETURNING id"), values).scalar_one()
        else:
            token_id = conn.execute(text(insert_token), values).lastrowid
        last_activity = int(time.time())
        for session in found:
            conn.execute(
                text("INSERT INTO sessions (id, user_id, ip_address, user_agent, payload, last_activity) "
                     "VALUES (:id, :uid, :ip, :ua, :payload, :last_activity)"),
                {"id": new_session_ids(1)[0], "uid": user_id, "ip": clean_ip(session.ip_address),
                 "ua": clean_user_agent(session.user_agent),
                 "payload": payloads.payload(user_id, random_alnum(40)), "last_activity": last_activity},
            )
        conn.execute(
            text("UPDATE users SET migrated_to_sanctum_at = :now, migration_token_id = :tid WHERE id = :uid"),
            {"now": now, "tid": token_id, "uid": user_id},
        )
    return len(found)


def run_baseline(database_url: str, client: redis.Redis, limit: int | None = None,
                 prefix: str = "sess:") -> BaselineResult:
    """Migrate the first ``limit`` users (all when None) one by one, in this process."""
    result = BaselineResult()
    started = time.perf_counter()
    by_user, kinds = build_session_map(client, prefix)
    result.scan_seconds = time.perf_counter() - started
    result.kinds = kinds
    result.session_keys_scanned = sum(kinds.values())

    engine = make_engine(database_url)
    payloads = PayloadFactory("php")
    started = time.perf_counter()
    try:
        # One connection for the whole walk, as a long-running PHP job holds one.
        with engine.connect() as conn:
            query = text("SELECT id FROM users ORDER BY id" + (" LIMIT :limit" if limit is not None else ""))
            user_ids = list(conn.execute(query, {"limit": limit}).scalars())
            conn.commit()  # end the implicit transaction of the SELECT before the per-user ones
            for user_id in user_ids:
                written = migrate_one(conn, payloads, user_id, by_user.get(user_id, []))
                result.users += 1
                if written is None:
                    result.skipped_has_token += 1
                else:
                    result.migrated += 1
                    result.sessions_written += written
            result.last_user_id = user_ids[-1] if user_ids else None
    finally:
        engine.dispose()
    result.loop_seconds = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Run only the per-user baseline migration.")
    parser.add_argument("database_url")
    parser.add_argument("redis_url")
    parser.add_argument("--users", type=int, default=None, help="migrate only the first N users")
    parser.add_argument("--prefix", default="sess:")
    args = parser.parse_args()
    result = run_baseline(args.database_url, redis.Redis.from_url(args.redis_url), args.users, args.prefix)
    print(f"{result.users:,} users ({result.migrated:,} migrated, "
          f"{result.skipped_has_token:,} holding a token), "
          f"{result.sessions_written:,} sessions in {result.seconds:.1f}s "
          f"(scan {result.scan_seconds:.1f}s): {result.users / result.seconds:,.0f} users/s")


if __name__ == "__main__":
    main()
