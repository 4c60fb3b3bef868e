"""The SQL of one chunk, per dialect: lock and classify its users, then write everything.

PostgreSQL gets one statement for the users and one statement of data-modifying
CTEs for all writes. Each chunk's columns travel as comma-joined strings split by
``string_to_array`` (ids, digits, hex and CSRF tokens hold no commas), with JSON
only for the free-text IP address and user agent, and session payloads are
assembled in the database from the serializer's own frame: pg8000's row and
array handling, and JSON of every row, cost more than the database work.
Other databases take SQLAlchemy Core queries and executemany.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, bindparam, insert, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from tokenmigration.db.schema import ledger_failures, ledger_sessions, ledger_tokens, sessions, tokens, users
from tokenmigration.formats.laravel_session import PayloadFactory


@dataclass(slots=True)
class LockedUsers:
    """What one pass found: users to migrate, users to skip, and users another transaction holds."""

    candidates: list[int] = field(default_factory=list)
    already_migrated: int = 0
    holds_tokens: int = 0
    busy: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UserScope:
    """Which users a pass covers: an id range (a chunk) or a list of ids (a retry of busy users)."""

    lo: int | None = None
    hi: int | None = None
    ids: tuple[int, ...] | None = None

    def where(self, id_column) -> ColumnElement[bool]:
        return id_column.in_(self.ids) if self.ids is not None else id_column.between(self.lo, self.hi)


@dataclass(slots=True)
class TokenBatch:
    user_ids: list[int]
    hashes: list[str]


@dataclass(slots=True)
class SessionBatch:
    """Columns of the session rows to create; the payload is built from ``csrf_tokens``."""

    ids: list[str]
    user_ids: list[int]
    csrf_tokens: list[str]
    ip_addresses: list[str | None]
    user_agents: list[str | None]
    source_hashes: list[str]


@dataclass(frozen=True, slots=True)
class WriteContext:
    run_id: str
    now: datetime
    last_activity: int
    tokenable_type: str
    token_name: str
    abilities: str
    expires_at: datetime | None
    has_expires_at: bool
    payloads: PayloadFactory
    want_token_ids: bool = False


class ChunkSql(Protocol):
    def lock_users(self, conn: Connection, scope: UserScope, tokenable_type: str, lock: bool,
                   skip_locked: bool) -> LockedUsers:
        """Lock (when ``lock``) and classify the scope's users; with ``skip_locked``, report
        the users that exist but another transaction holds instead of waiting for them."""

    def write(self, conn: Connection, ctx: WriteContext, tokens: TokenBatch, sessions: SessionBatch
              ) -> dict[int, int]:
        """Insert everything; with ``ctx.want_token_ids``, return user id -> new token id."""


def _ids(text_: str | None) -> list[int]:
    return [int(part) for part in text_.split(",")] if text_ else []


class PostgresChunkSql:
    def lock_users(self, conn, scope, tokenable_type, lock, skip_locked):
        def in_scope(column: str) -> str:
            if scope.ids is not None:
                return f"{column} = ANY(CAST(string_to_array(:ids, ',') AS bigint[]))"
            return f"{column} BETWEEN :lo AND :hi"

        locking = ("FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE") if lock else ""
        # Rows another transaction holds are invisible to SKIP LOCKED; the last column finds them.
        busy = f"""(SELECT string_agg(u.id::text, ',' ORDER BY u.id) FROM users u
                    WHERE {in_scope('u.id')} AND NOT EXISTS (SELECT 1 FROM held h WHERE h.id = u.id))""" \
            if lock and skip_locked else "NULL"
        statement = text(f"""
            WITH held AS (
                SELECT id, migrated_to_sanctum_at IS NOT NULL AS migrated FROM users
                WHERE {in_scope('id')} ORDER BY id {locking}
            ), holders AS (
                -- One range scan of the (tokenable_type, tokenable_id) index. A per-user EXISTS lets the
                -- planner, whose statistics lag behind a running migration, hash a seq scan of the whole
                -- token table for every chunk instead.
                SELECT DISTINCT tokenable_id AS id FROM personal_access_tokens
                WHERE tokenable_type = :tokenable_type AND {in_scope('tokenable_id')}
            ), classified AS (
                SELECT held.id, migrated, NOT migrated AND holders.id IS NOT NULL AS holds
                FROM held LEFT JOIN holders ON holders.id = held.id
            )
            SELECT (SELECT string_agg(id::text, ',' ORDER BY id) FROM classified WHERE NOT migrated AND NOT holds),
                   (SELECT count(*) FROM classified WHERE migrated),
                   (SELECT count(*) FROM classified WHERE holds),
                   {busy}
        """)
        params = {"tokenable_type": tokenable_type}
        if scope.ids is not None:
            params["ids"] = ",".join(str(int(i)) for i in scope.ids)
        else:
            params.update(lo=scope.lo, hi=scope.hi)
        candidates, already, holders, busy_ids = conn.execute(statement, params).one()
        return LockedUsers(_ids(candidates), already, holders, _ids(busy_ids))

    def write(self, conn, ctx, tokens, sessions):
        if not tokens.user_ids:
            return {}
        expires_col = ", expires_at" if ctx.has_expires_at else ""
        expires_val = ", CAST(:expires_at AS timestamp)" if ctx.has_expires_at else ""
        result = "SELECT tokenable_id, id FROM ins" if ctx.want_token_ids else "SELECT count(*), 0 FROM ins"
        statement = text(f"""
            WITH src AS (
                SELECT * FROM unnest(CAST(string_to_array(:token_users, ',') AS bigint[]),
                                     string_to_array(:token_hashes, ',')) AS r(u, h)
            ), ins AS (
                INSERT INTO personal_access_tokens
                    (tokenable_type, tokenable_id, name, token, abilities, created_at, updated_at{expires_col})
                SELECT :tokenable_type, u, :token_name, h, :abilities, :now, :now{expires_val} FROM src
                RETURNING id, tokenable_id
            ), ledger AS (
                INSERT INTO token_migration_tokens (user_id, token_id, run_id, created_at)
                SELECT tokenable_id, id, :run_id, :now FROM ins
            ), mark AS (
                UPDATE users SET migrated_to_sanctum_at = :now, migration_token_id = ins.id
                FROM ins WHERE users.id = ins.tokenable_id
                -- the id range lets the planner walk the primary key instead of scanning the whole table
                AND users.id BETWEEN :token_lo AND :token_hi
            ), forgive AS (
                DELETE FROM token_migration_failures f USING src WHERE f.user_id = src.u
            ), sess AS (
                SELECT s.i, s.u, s.c, s.sh, x.ip, y.ua
                FROM unnest(string_to_array(:session_ids, ','),
                            CAST(string_to_array(:session_users, ',') AS bigint[]),
                            string_to_array(:csrf_tokens, ','),
                            string_to_array(:source_hashes, ',')) WITH ORDINALITY AS s(i, u, c, sh, n)
                JOIN json_array_elements_text(CAST(:ips AS json)) WITH ORDINALITY AS x(ip, n) USING (n)
                JOIN json_array_elements_text(CAST(:uas AS json)) WITH ORDINALITY AS y(ua, n) USING (n)
            ), sess_ins AS (
                INSERT INTO sessions (id, user_id, ip_address, user_agent, payload, last_activity)
                SELECT i, u, ip, ua,
                       -- base64 of the same frame PayloadFactory fills; PostgreSQL wraps base64 lines
                       replace(encode(convert_to(CAST(:frame_head AS text) || c || CAST(:frame_middle AS text)
                                                 || u::text || CAST(:frame_tail AS text), 'UTF8'), 'base64'),
                               E'\\n', ''),
                       :last_activity
                FROM sess
            ), sess_ledger AS (
                INSERT INTO token_migration_sessions (user_id, session_id, run_id, source_hash, created_at)
                SELECT u, i, :run_id, sh, :now FROM sess
            )
            {result}
        """)
        head, middle, tail = ctx.payloads.frame
        params = {
            "token_users": ",".join(map(str, tokens.user_ids)),
            "token_hashes": ",".join(tokens.hashes),
            "token_lo": min(tokens.user_ids),
            "token_hi": max(tokens.user_ids),
            "session_ids": ",".join(sessions.ids),
            "session_users": ",".join(map(str, sessions.user_ids)),
            "csrf_tokens": ",".join(sessions.csrf_tokens),
            "source_hashes": ",".join(sessions.source_hashes),
            "ips": json.dumps(sessions.ip_addresses, ensure_ascii=False),
            "uas": json.dumps(sessions.user_agents, ensure_ascii=False),
            "frame_head": head,
            "frame_middle": middle,
            "frame_tail": tail,
            "tokenable_type": ctx.tokenable_type,
            "token_name": ctx.token_name,
            "abilities": ctx.abilities,
            "now": ctx.now,
            "run_id": ctx.run_id,
            "last_activity": ctx.last_activity,
        }
        if ctx.has_expires_at:
            params["expires_at"] = ctx.expires_at
        rows = conn.execute(statement, params).all()
        return dict(rows) if ctx.want_token_ids else {}


class GenericChunkSql:
    def lock_users(self, conn, scope, tokenable_type, lock, skip_locked):
        query = select(users.c.id, users.c.migrated_to_sanctum_at).where(scope.where(users.c.id)).order_by(users.c.id)
        if lock:  # SQLite renders no FOR UPDATE: its BEGIN IMMEDIATE already serializes writers
            query = query.with_for_update(skip_locked=skip_locked)
        rows = conn.execute(query).all()
        fresh = [uid for uid, migrated_at in rows if migrated_at is None]
        holders: set[int] = set()
        for start in range(0, len(fresh), 500):
            holders.update(conn.execute(
                select(tokens.c.tokenable_id).distinct().where(
                    tokens.c.tokenable_type == tokenable_type, tokens.c.tokenable_id.in_(fresh[start : start + 500])
                )
            ).scalars())
        return LockedUsers([uid for uid in fresh if uid not in holders], len(rows) - len(fresh), len(holders))

    def write(self, conn, ctx, tokens_, sessions_):
        if not tokens_.user_ids:
            return {}
        values = {
            "tokenable_type": ctx.tokenable_type,
            "name": ctx.token_name,
            "abilities": ctx.abilities,
            "created_at": ctx.now,
            "updated_at": ctx.now,
        }
        if ctx.has_expires_at:
            values["expires_at"] = ctx.expires_at
        conn.execute(insert(tokens), [{**values, "tokenable_id": uid, "token": h}
                                      for uid, h in zip(tokens_.user_ids, tokens_.hashes, strict=True)])
        # These users held no token before and the chunk holds their rows, so their tokens are ours.
        user_ids = tokens_.user_ids
        new_ids: dict[int, int] = {}
        for start in range(0, len(user_ids), 500):
            new_ids.update(conn.execute(
                select(tokens.c.tokenable_id, tokens.c.id).where(
                    tokens.c.tokenable_type == ctx.tokenable_type,
                    tokens.c.tokenable_id.in_(user_ids[start : start + 500]),
                )
            ).all())
        conn.execute(insert(ledger_tokens), [
            {"token_id": tid, "user_id": uid, "run_id": ctx.run_id, "created_at": ctx.now}
            for uid, tid in new_ids.items()
        ])
        conn.execute(
            update(users).where(users.c.id == bindparam("uid")).values(
                migrated_to_sanctum_at=ctx.now, migration_token_id=bindparam("tid")
            ),
            [{"uid": uid, "tid": tid} for uid, tid in new_ids.items()],
        )
        conn.execute(ledger_failures.delete().where(ledger_failures.c.user_id == bindparam("uid")),
                     [{"uid": uid} for uid in user_ids])
        if sessions_.ids:
            payloads = ctx.payloads.payloads(sessions_.user_ids, sessions_.csrf_tokens)
            conn.execute(insert(sessions), [
                {"id": sid, "user_id": uid, "ip_address": ip, "user_agent": ua, "payload": payload,
                 "last_activity": ctx.last_activity}
                for sid, uid, ip, ua, payload in zip(sessions_.ids, sessions_.user_ids, sessions_.ip_addresses,
                                                     sessions_.user_agents, payloads, strict=True)
            ])
            conn.execute(insert(ledger_sessions), [
                {"session_id": sid, "user_id": uid, "run_id": ctx.run_id, "source_hash": sh, "created_at": ctx.now}
                for sid, uid, sh in zip(sessions_.ids, sessions_.user_ids, sessions_.source_hashes, strict=True)
            ])
        return new_ids


def chunk_sql_for(dialect_name: str) -> ChunkSql:
    return PostgresChunkSql() if dialect_name == "postgresql" else GenericChunkSql()
