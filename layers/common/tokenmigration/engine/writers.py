"""The SQL of one chunk, per dialect: lock and classify its users, then write everything.

PostgreSQL gets one statement for the users and one statement of data-modifying
CTEs for all writes. Each chunk's columns travel as comma-joined strings split by
``string_to_array`` (ids, digits, hex and CSRF tokens hold no commas); the free-text
IP address and user agent are joined by a control character they cannot hold
(``laravel_session.clean_*`` removes them), and session payloads are assembled in
the database from the serializer's own frame: pg8000's row and array handling, and
JSON of every row, cost more than the database work. (The free text used to travel as
JSON arrays, which PostgreSQL refuses to turn into text when a value holds NUL.)
MySQL and MariaDB get a few multi-row statements per chunk (``MysqlChunkSql``). SQLite takes
SQLAlchemy Core queries and executemany.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, bindparam, insert, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from tokenmigration.db.schema import ledger_failures, ledger_sessions, ledger_tokens, sessions, tokens, users
from tokenmigration.formats.laravel_session import PayloadFactory


@dataclass(slots=True)
class LockedUsers:
    """What one pass found: users to migrate, users to skip (already migrated, or holding tokens the app
    made), and users another transaction holds. Every list is in id order."""

    candidates: list[int] = field(default_factory=list)
    migrated: list[int] = field(default_factory=list)
    holders: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)

    @property
    def already_migrated(self) -> int:
        return len(self.migrated)

    @property
    def holds_tokens(self) -> int:
        return len(self.holders)


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
    # False for Laravel's redis session driver: the migrator writes the sessions to Redis, the ledger stays here.
    session_table: bool = True
    # One ledger row per user (PostgreSQL bulk chunks; see schema.ledger_packed) instead of one per token and
    # one per session.
    packed_ledger: bool = False


class ChunkSql(Protocol):
    def lock_users(self, conn: Connection, scope: UserScope, tokenable_type: str, lock: bool,
                   skip_locked: bool) -> LockedUsers:
        """Lock (when ``lock``) and classify the scope's users; with ``skip_locked``, report
        the users that exist but another transaction holds instead of waiting for them."""

    def write(self, conn: Connection, ctx: WriteContext, tokens: TokenBatch, sessions: SessionBatch
              ) -> dict[int, int]:
        """Insert everything; with ``ctx.want_token_ids``, return user id -> new token id."""


# Free text travels joined by FIELD_SEPARATOR, NULL as NULL_FIELD; clean_ip and clean_user_agent remove both.
FIELD_SEPARATOR = "\x1f"
NULL_FIELD = "\x1e"


def _free_text(values: list[str | None]) -> str:
    if not values:
        return ""
    joined = FIELD_SEPARATOR.join(v or NULL_FIELD for v in values)
    # A separator inside a value would shift every later row's text onto the wrong session.
    nulls = values.count(None) + values.count("")
    if joined.count(FIELD_SEPARATOR) != len(values) - 1 or joined.count(NULL_FIELD) != nulls:
        raise ValueError("free text holds a separator: pass it through clean_ip / clean_user_agent")
    return joined


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
                   (SELECT string_agg(id::text, ',' ORDER BY id) FROM classified WHERE migrated),
                   (SELECT string_agg(id::text, ',' ORDER BY id) FROM classified WHERE holds),
                   {busy}
        """)
        params = {"tokenable_type": tokenable_type}
        if scope.ids is not None:
            params["ids"] = ",".join(str(int(i)) for i in scope.ids)
        else:
            params.update(lo=scope.lo, hi=scope.hi)
        candidates, migrated, holders, busy_ids = conn.execute(statement, params).one()
        return LockedUsers(_ids(candidates), _ids(migrated), _ids(holders), _ids(busy_ids))

    def write(self, conn, ctx, tokens, sessions):
        if not tokens.user_ids and not sessions.ids:
            return {}
        expires_col = ", expires_at" if ctx.has_expires_at else ""
        expires_val = ", CAST(:expires_at AS timestamp)" if ctx.has_expires_at else ""
        result = "SELECT tokenable_id, id FROM ins" if ctx.want_token_ids else "SELECT count(*), 0 FROM ins"
        session_insert = ""
        if ctx.session_table:
            payload = "p" if ctx.payloads.encrypted else (
                # base64 of the same frame PayloadFactory fills; PostgreSQL wraps base64 lines
                "replace(encode(convert_to(CAST(:frame_head AS text) || c || CAST(:frame_middle AS text) "
                "|| u::text || CAST(:frame_tail AS text), 'UTF8'), 'base64'), E'\\n', '')"
            )
            payloads = "JOIN unnest(string_to_array(:payloads, ',')) WITH ORDINALITY AS z(p, n) USING (n)" \
                if ctx.payloads.encrypted else ""
            session_insert = f"""
            , sess_ins AS (
                INSERT INTO sessions (id, user_id, ip_address, user_agent, payload, last_activity)
                SELECT i, u, ip, ua, {payload}, :last_activity
                FROM sess {payloads}
            )"""
        if ctx.packed_ledger:
            token_ledger = ""
            # A user's token and sessions in one row: the sessions grouped by user, joined to the new tokens
            # (a user skipped for the token has sessions only; a migrated user without sessions, a token only).
            session_ledger = """, packed AS (
                INSERT INTO token_migration_users (user_id, run_id, token_id, session_ids, source_hashes, created_at)
                SELECT u, :run_id, t.id, s.ids, s.hashes, :now
                FROM (SELECT tokenable_id AS u, id FROM ins) t
                FULL JOIN (SELECT u, string_agg(i, ',' ORDER BY n) AS ids, string_agg(sh, ',' ORDER BY n) AS hashes
                           FROM sess GROUP BY u) s USING (u)
            )"""
        else:
            token_ledger = """, ledger AS (
                INSERT INTO token_migration_tokens (user_id, token_id, run_id, created_at)
                SELECT tokenable_id, id, :run_id, :now FROM ins
            )"""
            session_ledger = """, sess_ledger AS (
                INSERT INTO token_migration_sessions (user_id, session_id, run_id, source_hash, created_at)
                SELECT u, i, :run_id, sh, :now FROM sess
            )"""
        statement = text(f"""
            WITH src AS (
                SELECT * FROM unnest(CAST(string_to_array(:token_users, ',') AS bigint[]),
                                     string_to_array(:token_hashes, ',')) AS r(u, h)
            ), ins AS (
                INSERT INTO personal_access_tokens
                    (tokenable_type, tokenable_id, name, token, abilities, created_at, updated_at{expires_col})
                SELECT :tokenable_type, u, :token_name, h, :abilities, :now, :now{expires_val} FROM src
                RETURNING id, tokenable_id
            ){token_ledger}, mark AS (
                UPDATE users SET migrated_to_sanctum_at = :now, migration_token_id = ins.id
                FROM ins WHERE users.id = ins.tokenable_id
                -- the id range lets the planner walk the primary key instead of scanning the whole table
                AND users.id BETWEEN :token_lo AND :token_hi
            ), forgive AS (
                DELETE FROM token_migration_failures f USING src WHERE f.user_id = src.u
            ), sess AS (
                SELECT * FROM unnest(string_to_array(:session_ids, ','),
                                     CAST(string_to_array(:session_users, ',') AS bigint[]),
                                     string_to_array(:csrf_tokens, ','),
                                     string_to_array(:source_hashes, ','),
                                     string_to_array(:ips, :sep, :null),
                                     string_to_array(:uas, :sep, :null)) WITH ORDINALITY AS s(i, u, c, sh, ip, ua, n)
            ){session_insert}{session_ledger}
            {result}
        """)
        params = {
            "token_users": ",".join(map(str, tokens.user_ids)),
            "token_hashes": ",".join(tokens.hashes),
            # an empty range when only skipped users' sessions are written
            "token_lo": min(tokens.user_ids, default=0),
            "token_hi": max(tokens.user_ids, default=-1),
            "session_ids": ",".join(sessions.ids),
            "session_users": ",".join(map(str, sessions.user_ids)),
            "csrf_tokens": ",".join(sessions.csrf_tokens),
            "source_hashes": ",".join(sessions.source_hashes),
            "ips": _free_text(sessions.ip_addresses),
            "uas": _free_text(sessions.user_agents),
            "sep": FIELD_SEPARATOR,
            "null": NULL_FIELD,
            "tokenable_type": ctx.tokenable_type,
            "token_name": ctx.token_name,
            "abilities": ctx.abilities,
            "now": ctx.now,
            "run_id": ctx.run_id,
            "last_activity": ctx.last_activity,
        }
        if ctx.has_expires_at:
            params["expires_at"] = ctx.expires_at
        if ctx.session_table and ctx.payloads.encrypted:
            # Each encrypted payload has its own IV: they come from Python, base64 (no commas), in session order.
            params["payloads"] = ",".join(ctx.payloads.payloads(sessions.user_ids, sessions.csrf_tokens))
        elif ctx.session_table:
            params["frame_head"], params["frame_middle"], params["frame_tail"] = ctx.payloads.frame
        rows = conn.execute(statement, params).all()
        return dict(rows) if ctx.want_token_ids else {}


class GenericChunkSql:
    def lock_users(self, conn, scope, tokenable_type, lock, skip_locked):
        query = select(users.c.id, users.c.migrated_to_sanctum_at).where(scope.where(users.c.id)).order_by(users.c.id)
        if lock:  # SQLite renders no FOR UPDATE: its BEGIN IMMEDIATE already serializes writers
            query = query.with_for_update(skip_locked=skip_locked)
        rows = conn.execute(query).all()
        fresh = [uid for uid, migrated_at in rows if migrated_at is None]
        migrated = [uid for uid, migrated_at in rows if migrated_at is not None]
        holders: set[int] = set()
        for start in range(0, len(fresh), 500):
            holders.update(conn.execute(
                select(tokens.c.tokenable_id).distinct().where(
                    tokens.c.tokenable_type == tokenable_type, tokens.c.tokenable_id.in_(fresh[start : start + 500])
                )
            ).scalars())
        return LockedUsers([uid for uid in fresh if uid not in holders], migrated,
                           [uid for uid in fresh if uid in holders])

    def write(self, conn, ctx, tokens_, sessions_):
        new_ids = self._write_tokens(conn, ctx, tokens_) if tokens_.user_ids else {}
        if sessions_.ids and ctx.session_table:
            payloads = ctx.payloads.payloads(sessions_.user_ids, sessions_.csrf_tokens)
            conn.execute(insert(sessions), [
                {"id": sid, "user_id": uid, "ip_address": ip, "user_agent": ua, "payload": payload,
                 "last_activity": ctx.last_activity}
                for sid, uid, ip, ua, payload in zip(sessions_.ids, sessions_.user_ids, sessions_.ip_addresses,
                                                     sessions_.user_agents, payloads, strict=True)
            ])
        if sessions_.ids:
            conn.execute(insert(ledger_sessions), [
                {"session_id": sid, "user_id": uid, "run_id": ctx.run_id, "source_hash": sh, "created_at": ctx.now}
                for sid, uid, sh in zip(sessions_.ids, sessions_.user_ids, sessions_.source_hashes, strict=True)
            ])
        return new_ids

    @staticmethod
    def _write_tokens(conn, ctx, tokens_) -> dict[int, int]:
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
        # Found again by their hashes (unique): a user minted for may also hold tokens the app made.
        user_ids, hashes = tokens_.user_ids, tokens_.hashes
        new_ids: dict[int, int] = {}
        for start in range(0, len(hashes), 500):
            new_ids.update(conn.execute(
                select(tokens.c.tokenable_id, tokens.c.id).where(tokens.c.token.in_(hashes[start : start + 500]))
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
        return new_ids


# A multi-row statement stays well under MySQL's max_allowed_packet (16 MiB on MariaDB, 64 MiB on MySQL 8;
# 4 MiB on old servers): rows are sent in statements of at most this many bytes.
MYSQL_STATEMENT_BYTES = 1 << 20


class MysqlChunkSql:
    """MySQL 8.0+ and MariaDB 10.6+: no data-modifying CTEs, so a few multi-row statements per chunk.

    Per chunk, in its one transaction: a locking read of the users (``SKIP LOCKED``), a count that finds
    the rows another transaction holds, one range read of the token holders; then one multi-row INSERT
    of the tokens, one read of their ids by the unique hashes, a multi-row INSERT of their ledger rows,
    one UPDATE of the users joined through those ledger rows, one DELETE of forgiven failures, and
    multi-row INSERTs of the sessions and their ledger rows. The engine runs MySQL at READ COMMITTED
    (db.connection): no gap locks, so workers on disjoint chunks never wait on each other.

    The statements are written here with every value a literal: ids, digits, hex and alphanumeric tokens,
    base64 payloads and fixed timestamps need no escaping, and the free text (IP address, user agent,
    names) goes through the driver's own ``escape``, which honours the server's NO_BACKSLASH_ESCAPES.
    Binding thousands of rows through SQLAlchemy and PyMySQL's executemany costs more time in Python than
    the server spends on the writes.
    """

    def lock_users(self, conn, scope, tokenable_type, lock, skip_locked):
        cur = _cursor(conn)
        where = _mysql_scope("id", scope)
        locking = ("FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE") if lock else ""
        cur.execute(f"SELECT id, migrated_to_sanctum_at IS NOT NULL FROM users WHERE {where} ORDER BY id {locking}")
        held = cur.fetchall()
        busy: list[int] = []
        if lock and skip_locked:
            # SKIP LOCKED hides rows another transaction holds; a plain read still sees them.
            cur.execute(f"SELECT count(*) FROM users WHERE {where}")
            if cur.fetchone()[0] > len(held):
                mine = {int(uid) for uid, _ in held}
                cur.execute(f"SELECT id FROM users WHERE {where} ORDER BY id")
                busy = [int(uid) for (uid,) in cur.fetchall() if int(uid) not in mine]
        fresh = [int(uid) for uid, migrated in held if not migrated]
        migrated = [int(uid) for uid, done in held if done]
        holders: set[int] = set()
        if fresh:
            # One range read of the (tokenable_type, tokenable_id) index, as on PostgreSQL.
            cur.execute(f"SELECT DISTINCT tokenable_id FROM personal_access_tokens WHERE tokenable_type = "
                        f"{_literal(conn, tokenable_type)} AND {_mysql_scope('tokenable_id', scope)}")
            holders = {int(uid) for (uid,) in cur.fetchall()}
            holders.intersection_update(fresh)
        cur.close()
        return LockedUsers([uid for uid in fresh if uid not in holders], migrated,
                           [uid for uid in fresh if uid in holders], busy)

    def write(self, conn, ctx, tokens_, sessions_):
        if not tokens_.user_ids and not sessions_.ids:
            return {}
        cur = _cursor(conn)
        now = _literal(conn, ctx.now.strftime("%Y-%m-%d %H:%M:%S"))
        run_id = _literal(conn, ctx.run_id)
        new_ids = self._write_tokens(conn, cur, ctx, tokens_, now, run_id) if tokens_.user_ids else {}
        if sessions_.ids and ctx.session_table:
            payloads = ctx.payloads.payloads(sessions_.user_ids, sessions_.csrf_tokens)
            escape = _escaper(conn)
            last_activity = int(ctx.last_activity)
            _insert_rows(cur, "INSERT INTO sessions (id, user_id, ip_address, user_agent, payload, last_activity) "
                              "VALUES ", (
                f"('{_alnum(sid)}',{int(uid)},{escape(ip)},{escape(ua)},'{payload}',{last_activity})"
                for sid, uid, ip, ua, payload in zip(sessions_.ids, sessions_.user_ids, sessions_.ip_addresses,
                                                     sessions_.user_agents, payloads, strict=True)
            ))
        if sessions_.ids:
            _insert_rows(cur, "INSERT INTO token_migration_sessions (user_id, session_id, run_id, source_hash, "
                              "created_at) VALUES ", (
                f"({int(uid)},'{_alnum(sid)}',{run_id},'{_hex(sh)}',{now})"
                for sid, uid, sh in zip(sessions_.ids, sessions_.user_ids, sessions_.source_hashes, strict=True)
            ))
        cur.close()
        return new_ids

    @staticmethod
    def _write_tokens(conn, cur, ctx, tokens_, now: str, run_id: str) -> dict[int, int]:
        tokenable_type = _literal(conn, ctx.tokenable_type)
        hashes = ",".join(f"'{_hex(h)}'" for h in tokens_.hashes)
        user_ids = ",".join(str(int(uid)) for uid in tokens_.user_ids)

        columns = "tokenable_type, tokenable_id, name, token, abilities, created_at, updated_at"
        fixed_tail = f"{_literal(conn, ctx.token_name)}, "
        row_tail = f", {_literal(conn, ctx.abilities)}, {now}, {now}"
        if ctx.has_expires_at:
            columns += ", expires_at"
            expires = "NULL" if ctx.expires_at is None else _literal(conn, ctx.expires_at.strftime("%Y-%m-%d %H:%M:%S"))
            row_tail += f", {expires}"
        _insert_rows(cur, f"INSERT INTO personal_access_tokens ({columns}) VALUES ", (
            f"({tokenable_type},{int(uid)},{fixed_tail}'{_hex(h)}'{row_tail})"
            for uid, h in zip(tokens_.user_ids, tokens_.hashes, strict=True)
        ))
        # The hashes are unique: they name exactly the rows just inserted, whatever ids the server gave them.
        # A plain read (READ COMMITTED: no locks), so no worker ever waits on another's uncommitted tokens.
        cur.execute(f"SELECT tokenable_id, id FROM personal_access_tokens WHERE token IN ({hashes})")
        new_ids = {int(uid): int(tid) for uid, tid in cur.fetchall()}
        _insert_rows(cur, "INSERT INTO token_migration_tokens (user_id, token_id, run_id, created_at) VALUES ",
                     (f"({uid},{tid},{run_id},{now})" for uid, tid in new_ids.items()))
        # Joined through the ledger rows just written, whose key leads with the user id: the statement reads
        # only this chunk's range (another worker's range is never touched, so never locked).
        lo, hi = min(tokens_.user_ids), max(tokens_.user_ids)
        cur.execute("UPDATE users u JOIN token_migration_tokens l ON l.user_id = u.id "
                    f"SET u.migrated_to_sanctum_at = {now}, u.migration_token_id = l.token_id "
                    f"WHERE l.user_id BETWEEN {lo} AND {hi} AND u.id BETWEEN {lo} AND {hi} "
                    f"AND l.token_id IN ({','.join(str(tid) for tid in new_ids.values())})")
        cur.execute(f"DELETE FROM token_migration_failures WHERE user_id IN ({user_ids})")
        return new_ids


class _Statements:
    """Runs literal SQL through SQLAlchemy (its error wrapping, its transaction). PyMySQL %-formats every
    statement, even one without parameters, so a literal "%" (a user agent may hold one) is doubled."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._result = None

    def execute(self, sql: str) -> None:
        self._result = self.conn.exec_driver_sql(sql.replace("%", "%%"))

    def fetchall(self) -> list:
        return self._result.all()

    def fetchone(self):
        return self._result.one()

    def close(self) -> None:
        self._result = None


def _cursor(conn: Connection) -> _Statements:
    return _Statements(conn)


def _escaper(conn: Connection):
    """PyMySQL's ``Connection.escape``: a quoted literal, NULL for None, NO_BACKSLASH_ESCAPES-aware."""
    return conn.connection.dbapi_connection.escape


def _literal(conn: Connection, value: str | None) -> str:
    return _escaper(conn)(value)


def _mysql_scope(column: str, scope: UserScope) -> str:
    if scope.ids is not None:
        return f"{column} IN ({','.join(str(int(i)) for i in scope.ids)})"
    return f"{column} BETWEEN {int(scope.lo)} AND {int(scope.hi)}"


_HEX = frozenset("0123456789abcdef")


def _hex(value: str) -> str:
    # Inlined unquoted-safe: a hash is lowercase hex or it is a bug upstream.
    if not _HEX.issuperset(value):
        raise ValueError("expected lowercase hex")
    return value


def _alnum(value: str) -> str:
    if not (value.isascii() and value.isalnum()):
        raise ValueError("expected an alphanumeric id")
    return value


def _insert_rows(cur, head: str, rows) -> None:
    """``head`` followed by the rows, in as few statements as MYSQL_STATEMENT_BYTES allows."""
    batch: list[str] = []
    size = len(head)
    for row in rows:
        if batch and size + len(row) + 1 > MYSQL_STATEMENT_BYTES:
            cur.execute(head + ",".join(batch))
            batch, size = [], len(head)
        batch.append(row)
        size += len(row) + 1
    if batch:
        cur.execute(head + ",".join(batch))


def chunk_sql_for(dialect_name: str) -> ChunkSql:
    if dialect_name == "postgresql":
        return PostgresChunkSql()
    if dialect_name in ("mysql", "mariadb"):
        return MysqlChunkSql()
    return GenericChunkSql()
