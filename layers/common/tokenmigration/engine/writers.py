"""The SQL of one chunk, per dialect: lock and classify its users, then write everything.

PostgreSQL gets one statement for the users (locked? migrated? holds tokens?)
and one statement of data-modifying CTEs for all writes, each chunk's rows
travelling as one JSON document (pg8000's array parameters cost more than the
database work). Other databases take SQLAlchemy Core queries and executemany.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, bindparam, insert, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from tokenmigration.db.schema import ledger_failures, ledger_sessions, ledger_tokens, sessions, tokens, users


@dataclass(frozen=True, slots=True)
class UserState:
    id: int
    migrated: bool
    holds_tokens: bool


@dataclass(frozen=True, slots=True)
class UserScope:
    """Which users a pass covers: an id range (a chunk) or a list of ids (a retry of busy users)."""

    lo: int | None = None
    hi: int | None = None
    ids: tuple[int, ...] | None = None

    def where(self, id_column) -> ColumnElement[bool]:
        return id_column.in_(self.ids) if self.ids is not None else id_column.between(self.lo, self.hi)


@dataclass(frozen=True, slots=True)
class TokenRow:
    user_id: int
    hash: str


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    user_id: int
    ip_address: str | None
    user_agent: str | None
    payload: str
    source_hash: str | None


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


class ChunkSql(Protocol):
    def lock_users(self, conn: Connection, scope: UserScope, tokenable_type: str, lock: bool,
                   skip_locked: bool) -> tuple[list[UserState], list[int]]:
        """Lock (when ``lock``) and classify the scope's users.

        Returns the users this transaction holds, and the ids of users that exist but
        another transaction holds (only with ``skip_locked``).
        """

    def write(self, conn: Connection, ctx: WriteContext, token_rows: list[TokenRow],
              session_rows: list[SessionRow]) -> dict[int, int]:
        """Insert everything; return user id -> new token id."""


def _dumps(rows: list[dict]) -> str:
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


class PostgresChunkSql:
    def lock_users(self, conn, scope, tokenable_type, lock, skip_locked):
        where = "id = ANY(CAST(:ids AS bigint[]))" if scope.ids is not None else "id BETWEEN :lo AND :hi"
        locking = ("FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE") if lock else ""
        # Rows another transaction holds are invisible to SKIP LOCKED; the second branch finds them.
        busy_branch = f"""
            UNION ALL
            SELECT u.id, false, false, false FROM users u
            WHERE u.{where} AND NOT EXISTS (SELECT 1 FROM held h WHERE h.id = u.id)
        """ if skip_locked and lock else ""
        statement = text(f"""
            WITH held AS (
                SELECT id, migrated_to_sanctum_at IS NOT NULL AS migrated FROM users
                WHERE {where} ORDER BY id {locking}
            )
            SELECT h.id, h.migrated,
                   EXISTS (SELECT 1 FROM personal_access_tokens t
                           WHERE t.tokenable_type = :tokenable_type AND t.tokenable_id = h.id),
                   true
            FROM held h
            {busy_branch}
        """)
        params = {"tokenable_type": tokenable_type}
        if scope.ids is not None:
            params["ids"] = "{" + ",".join(str(int(i)) for i in scope.ids) + "}"
        else:
            params.update(lo=scope.lo, hi=scope.hi)
        held, busy = [], []
        for uid, migrated, holds, is_held in conn.execute(statement, params):
            if is_held:
                held.append(UserState(uid, migrated, holds))
            else:
                busy.append(uid)
        held.sort(key=lambda u: u.id)
        return held, sorted(busy)

    def write(self, conn, ctx, token_rows, session_rows):
        if not token_rows:
            return {}
        expires_col = ", expires_at" if ctx.has_expires_at else ""
        expires_val = ", CAST(:expires_at AS timestamp)" if ctx.has_expires_at else ""
        statement = text(f"""
            WITH src AS (
                SELECT * FROM json_to_recordset(CAST(:tokens AS json)) AS r(u bigint, h text)
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
            ), forgive AS (
                DELETE FROM token_migration_failures f USING src WHERE f.user_id = src.u
            ), sess AS (
                SELECT * FROM json_to_recordset(CAST(:sessions AS json))
                    AS s(i text, u bigint, ip text, ua text, p text, sh text)
            ), sess_ins AS (
                INSERT INTO sessions (id, user_id, ip_address, user_agent, payload, last_activity)
                SELECT i, u, ip, ua, p, :last_activity FROM sess
            ), sess_ledger AS (
                INSERT INTO token_migration_sessions (user_id, session_id, run_id, source_hash, created_at)
                SELECT u, i, :run_id, sh, :now FROM sess
            )
            SELECT tokenable_id, id FROM ins
        """)
        params = {
            "tokens": _dumps([{"u": r.user_id, "h": r.hash} for r in token_rows]),
            "sessions": _dumps([
                {"i": s.id, "u": s.user_id, "ip": s.ip_address, "ua": s.user_agent, "p": s.payload,
                 "sh": s.source_hash}
                for s in session_rows
            ]),
            "tokenable_type": ctx.tokenable_type,
            "token_name": ctx.token_name,
            "abilities": ctx.abilities,
            "now": ctx.now,
            "run_id": ctx.run_id,
            "last_activity": ctx.last_activity,
        }
        if ctx.has_expires_at:
            params["expires_at"] = ctx.expires_at
        return dict(conn.execute(statement, params).all())


class GenericChunkSql:
    def lock_users(self, conn, scope, tokenable_type, lock, skip_locked):
        query = select(users.c.id, users.c.migrated_to_sanctum_at).where(scope.where(users.c.id)).order_by(users.c.id)
        if lock:  # SQLite renders no FOR UPDATE: its BEGIN IMMEDIATE already serializes writers
            query = query.with_for_update(skip_locked=skip_locked)
        rows = conn.execute(query).all()
        ids = [uid for uid, _ in rows]
        holders: set[int] = set()
        for start in range(0, len(ids), 500):
            holders.update(conn.execute(
                select(tokens.c.tokenable_id).distinct().where(
                    tokens.c.tokenable_type == tokenable_type, tokens.c.tokenable_id.in_(ids[start : start + 500])
                )
            ).scalars())
        return [UserState(uid, migrated is not None, uid in holders) for uid, migrated in rows], []

    def write(self, conn, ctx, token_rows, session_rows):
        if not token_rows:
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
        conn.execute(insert(tokens), [{**values, "tokenable_id": r.user_id, "token": r.hash} for r in token_rows])
        # These users held no token before and the chunk holds their rows, so their tokens are ours.
        user_ids = [r.user_id for r in token_rows]
        new_ids: dict[int, int] = {}
        for start in range(0, len(user_ids), 500):
            part = user_ids[start : start + 500]
            new_ids.update(conn.execute(
                select(tokens.c.tokenable_id, tokens.c.id).where(
                    tokens.c.tokenable_type == ctx.tokenable_type, tokens.c.tokenable_id.in_(part)
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
        if session_rows:
            conn.execute(insert(sessions), [
                {"id": s.id, "user_id": s.user_id, "ip_address": s.ip_address, "user_agent": s.user_agent,
                 "payload": s.payload, "last_activity": ctx.last_activity}
                for s in session_rows
            ])
            conn.execute(insert(ledger_sessions), [
                {"session_id": s.id, "user_id": s.user_id, "run_id": ctx.run_id, "source_hash": s.source_hash,
                 "created_at": ctx.now}
                for s in session_rows
            ])
        return new_ids


def chunk_sql_for(dialect_name: str) -> ChunkSql:
    return PostgresChunkSql() if dialect_name == "postgresql" else GenericChunkSql()
