"""Reading the ledger in both its forms: one row per token and per session, and one packed row per user.

PostgreSQL bulk chunks write packed rows (``token_migration_users``); every other path, and every other
database, writes the per-token and per-session rows. Readers that work on sets (rollback, cleanup,
verify, a retried chunk's counts) read both through the selects here. Paths that change one session of
a user (exchange, bridge, rotation) call ``unpack`` first, under the user's lock, and then see only the
per-session form.
"""

from __future__ import annotations

import weakref

from sqlalchemy import BigInteger, Connection, Engine, String, Table, func, literal_column, select, text, union_all
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from tokenmigration.db.schema import USER_LEDGERS, ledger_packed, ledger_sessions, ledger_tokens

# Engines whose database has the packed table. Only a True is kept: a database that lacks it gets it from
# `db upgrade` while this process may be running, and from then on a bulk run can write packed rows that
# every reader here must see.
_HAS_PACKED_TABLE: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def packs(bind: Connection | Engine) -> bool:
    """Whether packed rows can exist on this database: PostgreSQL (only its bulk chunks write them) with the
    table `db upgrade` creates. Until that upgrade ran, a bulk run is refused at its plan, and the exchange,
    the bridge, rollback and cleanup go on with the per-row ledger instead of failing on a missing table."""
    if bind.dialect.name != "postgresql":
        return False
    engine = bind if isinstance(bind, Engine) else bind.engine
    if _HAS_PACKED_TABLE.get(engine):
        return True
    query = text("SELECT to_regclass(:name) IS NOT NULL").bindparams(name=ledger_packed.name)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            present = bool(conn.execute(query).scalar_one())
    else:
        present = bool(bind.execute(query).scalar_one())
    if present:
        _HAS_PACKED_TABLE[engine] = True
    return present


def user_ledgers(bind: Connection | Engine) -> tuple[Table, ...]:
    """The ledger tables keyed by user id that this database has rows in: ``USER_LEDGERS`` less the packed
    table where ``packs`` says no rows can be (and the table may not exist yet)."""
    return USER_LEDGERS if packs(bind) else tuple(t for t in USER_LEDGERS if t is not ledger_packed)


def unnest_entries(row: str) -> str:
    """SQL for the (session id, source hash) pairs of packed row ``row`` (an alias), in the order written:
    the two comma-joined lists, unnested side by side."""
    return f"unnest(string_to_array({row}.session_ids, ','), string_to_array({row}.source_hashes, ','))"


def split_entries(session_ids: str, source_hashes: str) -> list[tuple[str, str]]:
    """The (session id, source hash) pairs of one packed row, in Python."""
    return list(zip(session_ids.split(","), source_hashes.split(","), strict=True))


def _in_users(column, lo: int | None, hi: int | None) -> list[ColumnElement[bool]]:
    return [] if lo is None else [column.between(lo, hi)]


def _packed_sessions(lo: int | None, hi: int | None):
    """One row per packed session: (user_id, run_id, session_id, source_hash)."""
    return text(f"""
        SELECT p.user_id, p.run_id, s.session_id, s.source_hash
        FROM token_migration_users p, {unnest_entries('p')} AS s(session_id, source_hash)
        WHERE p.session_ids IS NOT NULL {'' if lo is None else 'AND p.user_id BETWEEN :lo AND :hi'}
    """).bindparams(**({} if lo is None else {"lo": lo, "hi": hi})).columns(
        user_id=BigInteger, run_id=String, session_id=String, source_hash=String,
    ).subquery("packed_sessions")


def token_ids(conn: Connection | Engine, lo: int | None = None, hi: int | None = None) -> Select:
    """The ids of the tokens this tool created for users ``lo``..``hi`` (every user without a range)."""
    per_token = select(ledger_tokens.c.token_id).where(*_in_users(ledger_tokens.c.user_id, lo, hi))
    if not packs(conn):
        return per_token
    packed = select(ledger_packed.c.token_id).where(ledger_packed.c.token_id.is_not(None),
                                                    *_in_users(ledger_packed.c.user_id, lo, hi))
    return select(literal_column("token_id")).select_from(union_all(per_token, packed).subquery())


def session_rows(conn: Connection, lo: int | None = None, hi: int | None = None):
    """(user_id, session_id, source_hash, run_id) of every session row this tool created for users
    ``lo``..``hi``, both forms, as a subquery."""
    per_session = select(ledger_sessions.c.user_id, ledger_sessions.c.session_id, ledger_sessions.c.source_hash,
                         ledger_sessions.c.run_id).where(*_in_users(ledger_sessions.c.user_id, lo, hi))
    if not packs(conn):
        return per_session.subquery("ledgered_sessions")
    packed = _packed_sessions(lo, hi)
    return union_all(per_session, select(packed.c.user_id, packed.c.session_id, packed.c.source_hash,
                                         packed.c.run_id)).subquery("ledgered_sessions")


def session_ids(conn: Connection, lo: int | None = None, hi: int | None = None) -> Select:
    rows = session_rows(conn, lo, hi)
    return select(rows.c.session_id)


def run_counts(conn: Connection, lo: int, hi: int, run_id: str) -> tuple[int, int]:
    """(tokens, sessions) the run created for users ``lo``..``hi``, both forms."""
    def this_run(ledger):
        return (select(func.count()).select_from(ledger)
                .where(ledger.c.user_id.between(lo, hi), ledger.c.run_id == run_id).scalar_subquery())

    tokens_made, sessions_made = conn.execute(select(this_run(ledger_tokens), this_run(ledger_sessions))).one()
    if packs(conn):
        packed_tokens, packed_sessions = conn.execute(text("""
            SELECT count(token_id),
                   coalesce(sum(cardinality(string_to_array(session_ids, ','))), 0)
            FROM token_migration_users WHERE user_id BETWEEN :lo AND :hi AND run_id = :run_id
        """), {"lo": lo, "hi": hi, "run_id": run_id}).one()
        tokens_made += packed_tokens
        sessions_made += packed_sessions
    return int(tokens_made), int(sessions_made)


def unpack(conn: Connection, lo: int, hi: int) -> None:
    """Turn the packed rows of users ``lo``..``hi`` into per-token and per-session rows, in the caller's
    transaction: what the paths that change one session read and change."""
    if not packs(conn):
        return
    conn.execute(text(f"""
        WITH gone AS (
            DELETE FROM token_migration_users WHERE user_id BETWEEN :lo AND :hi
            RETURNING user_id, run_id, token_id, session_ids, source_hashes, created_at
        ), token_rows AS (
            INSERT INTO token_migration_tokens (user_id, token_id, run_id, created_at)
            SELECT user_id, token_id, run_id, created_at FROM gone WHERE token_id IS NOT NULL
        )
        INSERT INTO token_migration_sessions (user_id, session_id, run_id, source_hash, created_at)
        SELECT g.user_id, s.session_id, g.run_id, s.source_hash, g.created_at
        FROM gone g, {unnest_entries('g')} AS s(session_id, source_hash)
        WHERE g.session_ids IS NOT NULL
    """), {"lo": lo, "hi": hi})
