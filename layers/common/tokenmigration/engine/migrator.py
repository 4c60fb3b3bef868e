"""Plan a run, migrate or roll back one chunk, migrate or roll back one user.

Every database change of a chunk happens in one transaction. Users are locked
with ``FOR UPDATE SKIP LOCKED`` so workers never wait on each other; a user that
someone else holds is retried once with a bounded wait and otherwise reported
as failed (``user_locked``), to be picked up by a later run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Connection,
    Engine,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)

from tokenmigration.config import ConfigError, Settings
from tokenmigration.db.connection import is_mysql
from tokenmigration.db.schema import (
    ledger_failures,
    ledger_rollbacks,
    ledger_sessions,
    sessions,
    tokens,
    users,
)
from tokenmigration.db.upgrade import check_upgraded, token_columns
from tokenmigration.engine import errors, ledger
from tokenmigration.engine.clock import utcnow
from tokenmigration.engine.deadlocks import retry_deadlocks
from tokenmigration.engine.index_room import check_index_room
from tokenmigration.engine.results import (
    Chunk,
    ChunkResult,
    Problem,
    RollbackResult,
    redact_session_id,
    session_fingerprint,
)
from tokenmigration.engine.session_index import (
    SCAN_COUNT,
    IndexedSession,
    RedisIndexStore,
    ScanReport,
    ScanSlice,
    SessionIndexer,
    build_index,
    index_slice,
    scan_nodes,
)
from tokenmigration.engine.session_store import RedisSessionStore
from tokenmigration.engine.writers import SessionBatch, TokenBatch, UserScope, WriteContext, chunk_sql_for
from tokenmigration.formats import sanctum
from tokenmigration.formats.laravel_session import (
    LOGIN_WEB_KEY,
    PayloadFactory,
    clean_ip,
    clean_user_agent,
    decode_redis_value,
    new_csrf_tokens,
    new_session_ids,
    new_session_ids_for_batch,
)
from tokenmigration.redis_client import RedisLike, connect

SKIP_ALREADY_MIGRATED = "already_migrated"
SKIP_HAS_TOKENS = "has_tokens"


@dataclass(slots=True)
class Plan:
    run_id: str
    chunks: list[Chunk]
    scan: ScanReport

    @property
    def total_users(self) -> int:
        return sum(c.users for c in self.chunks)


@dataclass(slots=True)
class UserMigration:
    """The outcome of migrating one user. ``token`` holds the plaintext only when asked for."""

    user_id: int
    token_id: int
    sessions_migrated: int
    session_ids: list[str] = field(default_factory=list)
    token: sanctum.MintedToken | None = None


@dataclass(frozen=True, slots=True)
class UserStatus:
    user_id: int
    migrated: bool


@dataclass(slots=True)
class IssuedToken:
    """A migration token whose plaintext is being delivered (exchange): the secret stays in memory only."""

    token_id: int
    token: sanctum.MintedToken
    created_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def plaintext(self) -> str:
        return self.token.plaintext(self.token_id)

    def expires_in(self, now: datetime, sanctum_expiration: int | None = None) -> int | None:
        """Seconds until Sanctum stops accepting the token (``expires_at`` and ``sanctum.expiration``)."""
        ends = [self.expires_at] if self.expires_at is not None else []
        if sanctum_expiration and self.created_at is not None:
            ends.append(self.created_at + timedelta(minutes=sanctum_expiration))
        if not ends:
            return None
        return max(0, int((min(ends) - now).total_seconds()))

    def __repr__(self) -> str:  # never let a plaintext reach a log through repr()
        return f"IssuedToken(token_id={self.token_id})"


@dataclass(slots=True)
class _Outcome:
    result: ChunkResult
    token_ids: dict[int, int]
    session_ids: dict[int, list[str]]
    minted: dict[int, sanctum.MintedToken]
    want_token_ids: bool = False  # the single-user path reports its token id; bulk runs need none
    mint_for_holders: bool = False  # the exchange mints for users holding app-made tokens; runs skip them
    sessions_already_carried: int = 0  # presented sessions the ledger already had (an earlier run or attempt)


def plan_chunks(conn: Connection, chunk_size: int) -> list[Chunk]:
    """Chunk boundaries by user count (ids are sparse), in one query over the users table's primary key."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    ids = select(users.c.id.label("id")).subquery()
    numbered = select(ids.c.id, func.row_number().over(order_by=ids.c.id).label("rn")).subquery()
    # Integer division, with the size inlined (an int we validated): a bound parameter would make
    # the GROUP BY expression differ from the selected one on PostgreSQL.
    zero_based = (numbered.c.rn - literal_column("1")).self_group()
    # MySQL's "/" is decimal division; DIV is its integer one.
    divide = "DIV" if is_mysql(conn.dialect.name) else "/"
    bucket = zero_based.op(divide)(literal_column(str(int(chunk_size)))).label("bucket")
    query = (
        select(bucket, func.min(numbered.c.id), func.max(numbered.c.id), func.count())
        .group_by(bucket)
        .order_by(bucket)
    )
    return [Chunk(n, int(lo), int(hi), int(count)) for n, (_, lo, hi, count) in enumerate(conn.execute(query))]


class Migrator:
    def __init__(self, settings: Settings, engine: Engine, redis: RedisLike | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self._sql = chunk_sql_for(engine.dialect.name)
        # Fails at start-up, naming LARAVEL_APP_KEY, when sessions are encrypted and the key is missing or bad.
        self._payloads = PayloadFactory(settings.laravel_session_serialization, settings.session_app_key())
        self._redis_sessions = settings.laravel_session_driver == "redis"
        self._session_store: RedisSessionStore | None = None
        self._is_pg = engine.dialect.name == "postgresql"
        # Bulk chunks write one ledger row per user (engine/ledger.py) where that is read back set-based.
        self._packed_ledger = self._is_pg
        self._is_mysql = is_mysql(engine)
        self._has_expires_at: bool | None = None

    # --- setup ------------------------------------------------------------------------------

    def check_schema(self) -> None:
        check_upgraded(self.engine)
        self.has_expires_at  # noqa: B018 - reflects the token table once, failing early

    @property
    def has_expires_at(self) -> bool:
        if self._has_expires_at is None:
            self._has_expires_at = "expires_at" in token_columns(self.engine)
            if self.settings.migration_token_expires_days and not self._has_expires_at:
                raise ConfigError(
                    "MIGRATION_TOKEN_EXPIRES_DAYS is set but personal_access_tokens has no expires_at "
                    "column (Sanctum 2.x): unset it or upgrade Sanctum"
                )
        return self._has_expires_at

    @property
    def session_store(self) -> RedisSessionStore | None:
        """Laravel's sessions in Redis (``LARAVEL_SESSION_DRIVER=redis``); None for the database driver."""
        if not self._redis_sessions:
            return None
        if self._session_store is None:
            s = self.settings
            if s.laravel_session_redis_url and s.laravel_session_redis_url != s.redis_url:
                client = connect(s.laravel_session_redis_url)
            elif self.redis is not None:
                client = self.redis
            else:
                raise ConfigError("LARAVEL_SESSION_REDIS_URL or REDIS_URL must be set for LARAVEL_SESSION_DRIVER=redis")
            self._session_store = RedisSessionStore(client, s.laravel_session_redis_prefix, s.laravel_session_lifetime)
        return self._session_store

    def index_store(self, run_id: str) -> RedisIndexStore:
        if self.redis is None:
            raise ConfigError("REDIS_URL must be set")
        return RedisIndexStore(self.redis, run_id)

    # --- planning ---------------------------------------------------------------------------

    def plan(self, run_id: str, chunk_size: int) -> Plan:
        """Chunk the users, then SCAN the session store once and index it by chunk."""
        chunks = self.plan_chunks(chunk_size)
        report = build_index(self.indexer(run_id, chunks))
        return Plan(run_id, chunks, report)

    def plan_chunks(self, chunk_size: int) -> list[Chunk]:
        """A migration's chunks, once the schema is upgraded and Redis has room for the session index."""
        self.check_schema()
        if self.settings.index_memory_check and self.redis is not None:
            check_index_room(self.redis)
        with self.engine.connect() as conn:
            return plan_chunks(conn, chunk_size)

    def indexer(self, run_id: str, chunks: list[Chunk]) -> SessionIndexer:
        """For drivers that spread the SCAN's key batches over workers."""
        return SessionIndexer(self.redis, self.index_store(run_id), chunks, self.settings.express_session_prefix,
                              self.settings.express_user_id_path)

    # --- the plan in slices (the state machine loops these; see engine.session_index.index_slice) --

    def start_index(self, run_id: str, chunks: list[Chunk]) -> list[str]:
        """Drop what an earlier attempt indexed for this run; the nodes to scan, one cursor each."""
        store = self.index_store(run_id)
        store.drop(c.number for c in chunks)
        return scan_nodes(self.redis)

    def index_slice(self, run_id: str, chunks: list[Chunk], node: str, cursor: int, deadline: float,
                    scan_count: int = SCAN_COUNT) -> ScanSlice:
        return index_slice(self.indexer(run_id, chunks), node, cursor, deadline, scan_count=scan_count)

    def finish_index(self, run_id: str, keys_seen: int, chunk_count: int | None = None) -> None:
        """Every node is scanned: from now on a chunk without a slice has no sessions, unless the marker says
        the plan wrote one (``chunk_count``: the run's chunks, numbered from 0)."""
        self.index_store(run_id).mark_complete(keys_seen, chunk_count)

    def plan_rollback(self, chunk_size: int) -> list[Chunk]:
        """Chunks that together cover every user id this tool may have touched, by any path.

        Planned over the users table's primary key, as a migration is, not over the set of users the ledger
        names: at 100 million users that set is the union of some 400 million ledger rows and a full scan of
        ``users`` (whose migration timestamp has no index), more than a planning Lambda can do in its 15
        minutes, and a rollback that cannot be planned cannot run. The chunks are made contiguous and the
        first and last are stretched to the ledger's smallest and largest user id, so the ledgered rows of
        users deleted since are inside a chunk too; a chunk with nothing to undo is a few index lookups."""
        with self.engine.connect() as conn:
            chunks = plan_chunks(conn, chunk_size)
            ends = [conn.execute(select(func.min(t.c.user_id), func.max(t.c.user_id))).one()
                    for t in ledger.user_ledgers(conn)]
        lows = [int(lo) for lo, _ in ends if lo is not None] + [c.lo for c in chunks[:1]]
        highs = [int(hi) for _, hi in ends if hi is not None] + [c.hi for c in chunks[-1:]]
        if not lows:
            return []
        if not chunks:  # every user is gone, their ledgered tokens and sessions are not
            return [Chunk(0, min(lows), max(highs), 0)]
        covering, start = [], min(lows)
        for chunk in chunks:
            covering.append(Chunk(chunk.number, start, chunk.hi, chunk.users))
            start = chunk.hi + 1
        last = covering[-1]
        covering[-1] = Chunk(last.number, last.lo, max(highs), last.users)
        return covering

    def discard_index(self, run_id: str, chunks: list[Chunk]) -> None:
        self.index_store(run_id).drop(c.number for c in chunks)

    # --- migration --------------------------------------------------------------------------

    def migrate_chunk(self, chunk: Chunk, run_id: str, dry_run: bool = False) -> ChunkResult:
        """Migrate every user of the chunk that can be; safe to run again (a retry changes nothing).

        Every live logged-in session of every user of the chunk gets its Laravel row, skipped users
        included (skipping is about the token only), unless the ledger already has a row made from that
        Express session (an earlier run, attempt or exchange carried it): one row per Express session.

        Sessions come from the run's index as the plan saw them. They are not checked again:
        a session that ended since then becomes a Laravel row whose random id nobody holds
        (only the exchange, which verifies the live Express session, hands ids out), and
        cleanup removes it once it is past its lifetime.
        """
        found = self.index_store(run_id).read(chunk.number)
        outcome = retry_deadlocks(lambda: self._migrate_range(chunk.number, chunk.lo, chunk.hi, found, run_id,
                                                               dry_run))
        result = outcome.result
        if not dry_run and (result.skip_reasons[SKIP_ALREADY_MIGRATED] or outcome.sessions_already_carried):
            # Only then can an earlier attempt of this run have done part of the chunk's work.
            self._count_from_ledger(result, chunk, run_id)
        return result

    def _count_from_ledger(self, result: ChunkResult, chunk: Chunk, run_id: str) -> None:
        """Report what this run did in the chunk, whichever attempt did it.

        A chunk retried after its transaction committed sees its own users as already migrated;
        the ledger knows they were this run's, so every attempt reports the same counts.
        """
        with self.engine.connect() as conn:
            migrated, carried = ledger.run_counts(conn, chunk.lo, chunk.hi, run_id)
        earlier = migrated - result.migrated_users  # migrated by an earlier attempt of this run
        if earlier > 0 and result.skip_reasons[SKIP_ALREADY_MIGRATED]:
            result.skipped_users -= earlier
            result.skip_reasons[SKIP_ALREADY_MIGRATED] -= earlier
            if not result.skip_reasons[SKIP_ALREADY_MIGRATED]:
                del result.skip_reasons[SKIP_ALREADY_MIGRATED]
        result.migrated_users, result.sessions_migrated = migrated, carried

    def migrate_user(
        self,
        user_id: int,
        run_id: str,
        found_sessions: list[IndexedSession] = (),
        deliver_token: bool = False,
        mint_for_holders: bool = False,
    ) -> UserMigration:
        """The single-user path (admin route, exchange). Raises for 404/409 cases instead of skipping.

        ``mint_for_holders`` (the exchange): a user holding tokens the app made is migrated like any
        other (a migration token minted next to the app's) instead of refused with ``HoldsTokens``.
        The found sessions are carried (once) even when the user is refused as already migrated.
        """
        outcome = self._migrate_range(-1, user_id, user_id, list(found_sessions), run_id, False,
                                      keep_plaintext=deliver_token, want_token_ids=True,
                                      mint_for_holders=mint_for_holders)
        result = outcome.result
        if result.migrated_users == 1:
            return UserMigration(user_id, outcome.token_ids[user_id], result.sessions_migrated,
                                 outcome.session_ids.get(user_id, []), outcome.minted.get(user_id))
        if result.skip_reasons[SKIP_ALREADY_MIGRATED]:
            raise errors.AlreadyMigrated(f"user {user_id} is already migrated")
        if result.skip_reasons[SKIP_HAS_TOKENS]:
            raise errors.HoldsTokens(f"user {user_id} already holds Sanctum tokens")
        if result.failed_users:
            raise errors.UserBusy(f"user {user_id} is locked by another transaction; try again")
        raise errors.UnknownUser(f"no user with id {user_id}")

    def _migrate_range(self, number, lo, hi, found, run_id, dry_run, keep_plaintext=False, want_token_ids=False,
                       mint_for_holders=False) -> _Outcome:
        by_user: dict[int, list[IndexedSession]] = defaultdict(list)
        for entry in found:
            by_user[entry.user_id].append(entry)
        outcome = _Outcome(ChunkResult(chunk=number, dry_run=dry_run), {}, {}, {}, want_token_ids,
                           mint_for_holders)
        # Reflect the token table before the transaction: on SQLite a second connection would wait
        # for this one's write lock.
        self.has_expires_at  # noqa: B018
        with self.engine.connect() as conn, conn.begin() as transaction:
            locked = self._sql.lock_users(conn, UserScope(lo, hi), self.settings.sanctum_tokenable_type,
                                          lock=not dry_run, skip_locked=True)
            self._migrate_locked(conn, outcome, locked, by_user, run_id, dry_run, keep_plaintext)
            unknown = (by_user.keys() - set(locked.candidates) - set(locked.migrated) - set(locked.holders)
                       - set(locked.busy))
            if unknown:  # sessions of users that are not in the users table
                unknown -= self._existing(conn, unknown)
            for uid in sorted(unknown):
                for entry in by_user[uid]:
                    outcome.result.problems.append(Problem("unknown_user", f"no user with id {uid}", uid,
                                                           redact_session_id(entry.session_id)))
            if dry_run:
                transaction.rollback()
        if locked.busy:
            self._retry_busy(outcome, locked.busy, by_user, run_id, keep_plaintext)
        return outcome

    @staticmethod
    def _existing(conn: Connection, user_ids: set[int]) -> set[int]:
        ids = sorted(user_ids)
        found: set[int] = set()
        for start in range(0, len(ids), 500):
            found.update(conn.execute(select(users.c.id).where(users.c.id.in_(ids[start : start + 500]))).scalars())
        return found

    def _retry_busy(self, outcome, busy, by_user, run_id, keep_plaintext) -> None:
        # Another transaction held these rows (another worker, or the app). Wait for them a
        # bounded time; a worker that migrated them meanwhile makes them skips here.
        try:
            with self.engine.begin() as conn:
                if self._is_pg:
                    # set_config(..., true) is SET LOCAL as a function call: RDS Proxy pins a client to
                    # its server connection on a SET statement, not on a function call.
                    conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"),
                                 {"ms": str(int(self.settings.lock_timeout_ms))})
                elif self._is_mysql:
                    # InnoDB waits in whole seconds; the setting lasts for the session, so it is reset below.
                    seconds = max(1, -(-int(self.settings.lock_timeout_ms) // 1000))
                    conn.execute(text(f"SET SESSION innodb_lock_wait_timeout = {seconds}"))
                try:
                    locked = self._sql.lock_users(conn, UserScope(ids=tuple(busy)),
                                                  self.settings.sanctum_tokenable_type, lock=True, skip_locked=False)
                    self._migrate_locked(conn, outcome, locked, by_user, run_id, False, keep_plaintext)
                finally:
                    if self._is_mysql:
                        conn.execute(text("SET SESSION innodb_lock_wait_timeout = DEFAULT"))
        except Exception as exc:  # lock timeout: the transaction is gone, nothing was written
            if not _is_lock_timeout(exc):
                raise
            self._record_failures(busy, outcome.result, run_id, "user_locked",
                                  "the user row was locked by another transaction; run again to migrate")

    def _migrate_locked(self, conn, outcome, locked, by_user, run_id, dry_run, keep_plaintext) -> None:
        result = outcome.result
        if outcome.mint_for_holders:
            candidates, holders = sorted(locked.candidates + locked.holders), []
        else:
            candidates, holders = locked.candidates, locked.holders
        result.processed_users += len(candidates) + len(locked.migrated) + len(holders)
        result.skipped_users += len(locked.migrated) + len(holders)
        if locked.migrated:
            result.skip_reasons[SKIP_ALREADY_MIGRATED] += len(locked.migrated)
        if holders:
            result.skip_reasons[SKIP_HAS_TOKENS] += len(holders)
        result.migrated_users += len(candidates)
        # Skipping is about the token only: every locked user's sessions are carried, once each.
        found = [entry for uid in sorted(by_user.keys() & {*candidates, *locked.migrated, *holders})
                 for entry in by_user[uid]]
        hashes = [session_fingerprint(e.session_id) for e in found]
        if found:
            # One range scan of the ledger's key; on a first run it finds nothing. Users are locked, and
            # the exchange locks the user too, so nobody carries one of these sessions meanwhile.
            carried = self._carried_sources(conn, found)
            if carried:
                kept = [i for i, (e, h) in enumerate(zip(found, hashes, strict=True))
                        if (e.user_id, h) not in carried]
                outcome.sessions_already_carried += len(found) - len(kept)
                found, hashes = [found[i] for i in kept], [hashes[i] for i in kept]
        result.sessions_migrated += len(found)
        if (candidates or found) and not dry_run:
            self._write(conn, outcome, candidates, found, hashes, run_id, keep_plaintext)

    @staticmethod
    def _carried_sources(conn: Connection, found: list[IndexedSession]) -> set[tuple[int, str]]:
        """(user id, source hash) of the ledgered rows of these sessions' users: sessions already carried."""
        user_ids = sorted({e.user_id for e in found})
        ledgered = ledger.session_rows(conn, user_ids[0], user_ids[-1])
        rows = conn.execute(select(ledgered.c.user_id, ledgered.c.source_hash)
                            .where(ledgered.c.source_hash.is_not(None)))
        return {(int(uid), sh) for uid, sh in rows}

    def _write(self, conn, outcome, candidates, found, hashes, run_id, keep_plaintext) -> None:
        s = self.settings
        minted = sanctum.mint_tokens(len(candidates), s.sanctum_token_prefix)
        token_batch = TokenBatch(candidates, [tok.hash for tok in minted])
        if keep_plaintext:
            outcome.minted.update(zip(candidates, minted, strict=True))
        del minted  # bulk runs never deliver: drop every plaintext now
        session_batch = SessionBatch(
            ids=new_session_ids_for_batch(len(found)),
            user_ids=[e.user_id for e in found],
            csrf_tokens=new_csrf_tokens(len(found)),
            ip_addresses=[clean_ip(e.ip_address) for e in found],
            user_agents=[clean_user_agent(e.user_agent) for e in found],
            source_hashes=hashes,
        )
        now = utcnow()
        ctx = WriteContext(
            run_id=run_id,
            now=now,
            last_activity=int(now.replace(tzinfo=UTC).timestamp()),
            tokenable_type=s.sanctum_tokenable_type,
            token_name=s.migration_token_name,
            abilities=s.abilities_json,
            expires_at=now + timedelta(days=s.migration_token_expires_days) if s.migration_token_expires_days
            else None,
            has_expires_at=self._has_expires_at,
            payloads=self._payloads,
            want_token_ids=outcome.want_token_ids,
            packed_ledger=self._packed_ledger and not outcome.want_token_ids,
            session_table=not self._redis_sessions,
        )
        outcome.token_ids.update(self._sql.write(conn, ctx, token_batch, session_batch))
        if self._redis_sessions and session_batch.ids:
            # Before the commit: a failed commit leaves keys under random ids nobody holds, which expire;
            # the other order could commit users as migrated whose sessions were never written.
            self.session_store.put_many(session_batch.ids, self._payloads.redis_values(
                session_batch.user_ids, session_batch.csrf_tokens))
        for sid, uid in zip(session_batch.ids, session_batch.user_ids, strict=True):
            outcome.session_ids.setdefault(uid, []).append(sid)

    def _record_failures(self, user_ids, result: ChunkResult, run_id, code, message) -> None:
        now = utcnow()
        result.processed_users += len(user_ids)
        result.failed_users += len(user_ids)
        for uid in user_ids:
            result.problems.append(Problem(code, message, uid))
        with self.engine.begin() as conn:
            conn.execute(delete(ledger_failures).where(ledger_failures.c.user_id.in_(user_ids)))
            conn.execute(insert(ledger_failures), [
                {"user_id": uid, "run_id": run_id, "code": code, "message": message, "failed_at": now}
                for uid in user_ids
            ])

    # --- exchange (one user, one live Express session) ----------------------------------------

    def user_status(self, user_id: int) -> UserStatus | None:
        """One primary-key lookup: does the user exist, and is it migrated?"""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(users.c.id, users.c.migrated_to_sanctum_at).where(users.c.id == user_id)
            ).first()
        return None if row is None else UserStatus(int(row.id), row.migrated_to_sanctum_at is not None)

    def issued_token(self, migration: UserMigration) -> IssuedToken:
        """The token ``migrate_user(deliver_token=True)`` minted, with the row's times."""
        if migration.token is None:
            raise ValueError("migrate_user was not asked to deliver the token")
        columns = [tokens.c.created_at] + ([tokens.c.expires_at] if self.has_expires_at else [])
        with self.engine.connect() as conn:
            row = conn.execute(select(*columns).where(tokens.c.id == migration.token_id)).first()
        if row is None:
            raise errors.NoMigrationToken(f"the migration token of user {migration.user_id} is gone")
        return IssuedToken(migration.token_id, migration.token, row[0], row[1] if self.has_expires_at else None)

    def rotate_migration_token(self, user_id: int) -> IssuedToken:
        """Give the user's migration token a fresh plaintext; its id and ``users.migration_token_id`` stay.

        One UPDATE replaces the stored hash of the token ``users.migration_token_id`` names, and only if
        that token is in the ledger, belongs to the user and Sanctum would still accept it (not past
        ``expires_at`` or ``sanctum.expiration``). Earlier plaintexts stop working at once, so a retried
        exchange ends with exactly one working token. Raises ``NoMigrationToken`` when there is none
        (revoked by the app, pruned by cleanup, expired): a rotation never creates a second token.
        """
        s = self.settings
        minted = sanctum.mint_token(s.sanctum_token_prefix)
        now = utcnow()
        has_expires_at = self.has_expires_at
        conditions = [
            tokens.c.id == select(users.c.migration_token_id).where(users.c.id == user_id).scalar_subquery(),
            tokens.c.tokenable_type == s.sanctum_tokenable_type,
            tokens.c.tokenable_id == user_id,
            tokens.c.id.in_(ledger.token_ids(self.engine, user_id, user_id)),
        ]
        if has_expires_at:
            conditions.append(or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now))
        if s.sanctum_expiration:
            conditions.append(tokens.c.created_at > now - timedelta(minutes=s.sanctum_expiration))
        returning = [tokens.c.id, tokens.c.created_at] + ([tokens.c.expires_at] if has_expires_at else [])
        with self.engine.begin() as conn:
            if self.engine.dialect.update_returning:
                row = conn.execute(
                    update(tokens).where(*conditions).values(token=minted.hash, updated_at=now).returning(*returning)
                ).first()
            else:  # MySQL / MariaDB: no UPDATE ... RETURNING; lock the row, then change it by its id
                row = conn.execute(select(*returning).where(*conditions).with_for_update()).first()
                if row is not None:
                    conn.execute(update(tokens).where(tokens.c.id == row[0]).values(token=minted.hash,
                                                                                     updated_at=now))
        if row is None:
            raise errors.NoMigrationToken(f"user {user_id} holds no live migration token")
        return IssuedToken(int(row[0]), minted, row[1], row[2] if has_expires_at else None)

    def session_for_express_session(self, entry: IndexedSession, run_id: str) -> str:
        """The Laravel session row migrated from this Express session, or a new one; returns its id.

        Found: the ledger row with ``source_hash = sha256(Express session id)`` for the user whose
        session row still exists, still belongs to the user (Laravel rewrites ``user_id`` on every
        request and drops the row on logout) and is not past ``LARAVEL_SESSION_LIFETIME``; its
        ``last_activity`` is touched, as any Laravel request would. Otherwise a new row is written and
        ledgered (with the source hash), so rollback removes it, and the dead rows it replaces (past their
        lifetime, or logged out) go with their ledger rows: one Laravel row per Express session. The user
        row is locked meanwhile, so concurrent exchanges of one session end with one row. Raises
        ``NotMigrated`` / ``UnknownUser``.
        """
        # An exchange can meet a cleanup page or a rollback chunk on the user's rows: as their victim it runs again.
        return retry_deadlocks(lambda: self._session_for_express_session(entry, run_id))

    def _session_for_express_session(self, entry: IndexedSession, run_id: str) -> str:
        s = self.settings
        user_id = entry.user_id
        now = utcnow()
        now_ts = int(now.replace(tzinfo=UTC).timestamp())
        fingerprint = session_fingerprint(entry.session_id)
        with self.engine.begin() as conn:
            user = conn.execute(
                select(users.c.id, users.c.migrated_to_sanctum_at).where(users.c.id == user_id).with_for_update()
            ).first()
            if user is None:
                raise errors.UnknownUser(f"no user with id {user_id}")
            if user.migrated_to_sanctum_at is None:
                raise errors.NotMigrated(f"user {user_id} is not migrated")
            # What follows finds, replaces and ledgers single sessions: the per-session form.
            ledger.unpack(conn, user_id, user_id)
            if self._redis_sessions:
                return self._redis_session_for(conn, entry, run_id, fingerprint, now)
            found = conn.execute(
                select(sessions.c.id)
                .join(ledger_sessions, ledger_sessions.c.session_id == sessions.c.id)
                .where(
                    ledger_sessions.c.user_id == user_id,
                    ledger_sessions.c.source_hash == fingerprint,
                    sessions.c.user_id == user_id,
                    sessions.c.last_activity >= now_ts - s.laravel_session_lifetime * 60,
                )
                .order_by(sessions.c.last_activity.desc(), sessions.c.id)
                .limit(1)
            ).first()
            if found is not None:
                conn.execute(update(sessions).where(sessions.c.id == found.id).values(last_activity=now_ts))
                return found.id
            self._drop_replaced(conn, user_id, fingerprint)
            session_id = new_session_ids(1)[0]
            conn.execute(insert(sessions).values(
                id=session_id,
                user_id=user_id,
                ip_address=clean_ip(entry.ip_address),
                user_agent=clean_user_agent(entry.user_agent),
                payload=self._payloads.payload(user_id, new_csrf_tokens(1)[0]),
                last_activity=now_ts,
            ))
            conn.execute(insert(ledger_sessions).values(
                user_id=user_id, session_id=session_id, run_id=run_id, source_hash=fingerprint, created_at=now,
            ))
        return session_id

    @staticmethod
    def _drop_replaced(conn: Connection, user_id: int, fingerprint: str) -> None:
        """Remove the dead rows carried from this Express session (expired, or no longer logged in) and
        the ledger rows of every row that is gone. A row Laravel gave to someone else stays, ledgered."""
        carried = (ledger_sessions.c.user_id == user_id) & (ledger_sessions.c.source_hash == fingerprint)
        conn.execute(delete(sessions).where(
            sessions.c.id.in_(select(ledger_sessions.c.session_id).where(carried)),
            or_(sessions.c.user_id == user_id, sessions.c.user_id.is_(None)),
        ))
        conn.execute(delete(ledger_sessions).where(
            carried, ~exists().where(sessions.c.id == ledger_sessions.c.session_id)))

    def _redis_session_for(self, conn: Connection, entry: IndexedSession, run_id: str, fingerprint: str,
                           now: datetime) -> str:
        """``session_for_express_session`` for the redis driver: the key still exists and still logs the user
        in (Laravel deletes it on logout and rewrites it on every request), else a new one, ledgered."""
        user_id = entry.user_id
        store = self.session_store
        candidates = list(conn.execute(
            select(ledger_sessions.c.session_id)
            .where(ledger_sessions.c.user_id == user_id, ledger_sessions.c.source_hash == fingerprint)
            .order_by(ledger_sessions.c.created_at.desc(), ledger_sessions.c.session_id)
        ).scalars())
        gone = []
        for session_id, value in zip(candidates, store.get_many(candidates), strict=True):
            if value is None:  # expired, or destroyed by a logout
                gone.append(session_id)
                continue
            try:
                attrs = decode_redis_value(value, self.settings.laravel_session_serialization,
                                           self.settings.session_app_key())
            except ValueError:
                continue
            if attrs.get(LOGIN_WEB_KEY) == user_id and store.touch(session_id):
                return session_id
        if gone:  # as for rows: the ledger rows of keys that are gone go, one Laravel session per Express one
            conn.execute(delete(ledger_sessions).where(ledger_sessions.c.user_id == user_id,
                                                       ledger_sessions.c.session_id.in_(gone)))
        session_id = new_session_ids(1)[0]
        store.put_many([session_id], self._payloads.redis_values([user_id], new_csrf_tokens(1)))
        conn.execute(insert(ledger_sessions).values(
            user_id=user_id, session_id=session_id, run_id=run_id, source_hash=fingerprint, created_at=now,
        ))
        return session_id

    # --- rollback ---------------------------------------------------------------------------

    def rollback_chunk(self, chunk: Chunk, run_id: str | None = None) -> RollbackResult:
        """Remove exactly what this tool created for users in the chunk; safe to run again.

        With a ``run_id``, every attempt reports what the run removed in this chunk, whichever attempt
        did it: the counts are kept in the same transaction as the deletes.
        """
        def attempt() -> RollbackResult:
            result = RollbackResult(chunk=chunk.number)
            with self.engine.begin() as conn:
                self._rollback_range(conn, chunk.lo, chunk.hi, result)
                if run_id is not None:
                    self._remember_rollback(conn, run_id, chunk.number, result)
            return result

        return retry_deadlocks(attempt)

    def _remember_rollback(self, conn: Connection, run_id: str, number: int, result: RollbackResult) -> None:
        key = (ledger_rollbacks.c.run_id == run_id) & (ledger_rollbacks.c.chunk == number)
        earlier = conn.execute(select(ledger_rollbacks.c.users, ledger_rollbacks.c.tokens_revoked,
                                      ledger_rollbacks.c.sessions_removed).where(key)).first()
        if earlier is None:
            conn.execute(insert(ledger_rollbacks).values(
                run_id=run_id, chunk=number, users=result.users, tokens_revoked=result.tokens_revoked,
                sessions_removed=result.sessions_removed, created_at=utcnow()))
            return
        result.users += earlier.users
        result.tokens_revoked += earlier.tokens_revoked
        result.sessions_removed += earlier.sessions_removed
        conn.execute(update(ledger_rollbacks).where(key).values(
            users=result.users, tokens_revoked=result.tokens_revoked, sessions_removed=result.sessions_removed))

    def rollback_user(self, user_id: int) -> RollbackResult:
        result = RollbackResult()
        with self.engine.begin() as conn:
            exists = conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update()).first()
            if exists is None:
                raise errors.UnknownUser(f"no user with id {user_id}")
            self._rollback_range(conn, user_id, user_id, result)
            if not (result.users or result.tokens_revoked or result.sessions_removed):
                raise errors.NotMigrated(f"user {user_id} is not migrated")
        return result

    def _rollback_range(self, conn: Connection, lo: int, hi: int, result: RollbackResult) -> None:
        in_range_tokens = ledger.token_ids(conn, lo, hi)
        in_range_sessions = ledger.session_ids(conn, lo, hi)
        result.tokens_revoked = conn.execute(delete(tokens).where(tokens.c.id.in_(in_range_tokens))).rowcount
        if self._redis_sessions:
            # The keys go before the ledger rows commit: a retry finds the ledger rows and deletes nothing twice.
            result.sessions_removed = self.session_store.delete_many(conn.execute(in_range_sessions).scalars())
        else:
            result.sessions_removed = conn.execute(
                delete(sessions).where(sessions.c.id.in_(in_range_sessions))
            ).rowcount
        result.users = conn.execute(
            update(users)
            .where(users.c.id.between(lo, hi), users.c.migrated_to_sanctum_at.is_not(None))
            .values(migrated_to_sanctum_at=None, migration_token_id=None)
        ).rowcount
        for table in ledger.user_ledgers(conn):
            conn.execute(delete(table).where(table.c.user_id.between(lo, hi)))


def _is_lock_timeout(exc: Exception) -> bool:
    text_ = str(exc)
    # PostgreSQL's lock_not_available, MySQL's ER_LOCK_WAIT_TIMEOUT (1205), SQLite's busy timeout.
    return ("55P03" in text_ or "lock timeout" in text_ or "(1205," in text_ or "Lock wait timeout" in text_
            or "database is locked" in text_)
