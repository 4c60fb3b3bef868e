"""The one-machine driver: the same engine calls the Lambdas make, over a pool of workers."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from tokenmigration.config import Settings
from tokenmigration.db.connection import make_engine
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.results import Chunk, ChunkResult, Problem, RollbackResult
from tokenmigration.engine.runs import new_run_id
from tokenmigration.engine.session_index import ScanReport, SessionIndexer, scan_session_keys
from tokenmigration.redis_client import connect

ProgressCallback = Callable[["RunSummary"], None]


@dataclass(slots=True)
class RunSummary:
    run_id: str
    kind: str
    dry_run: bool = False
    phase: str = "planning"
    keys_seen: int = 0
    total_users: int = 0
    total_batches: int = 0
    current_batch: int = 0
    processed_users: int = 0
    migrated_users: int = 0
    skipped_users: int = 0
    failed_users: int = 0
    sessions_migrated: int = 0
    tokens_revoked: int = 0
    sessions_removed: int = 0
    skip_reasons: Counter[str] = field(default_factory=Counter)
    session_kinds: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.processed_users / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        remaining = self.total_users - self.processed_users
        if remaining <= 0:
            return 0.0
        return remaining / self.rate if self.rate > 0 else None

    def add_chunk(self, result: ChunkResult) -> None:
        self.current_batch += 1
        self.processed_users += result.processed_users
        self.migrated_users += result.migrated_users
        self.skipped_users += result.skipped_users
        self.failed_users += result.failed_users
        self.sessions_migrated += result.sessions_migrated
        self.skip_reasons.update(result.skip_reasons)
        self.problems += result.problems

    def add_rollback(self, result: RollbackResult, chunk: Chunk) -> None:
        self.current_batch += 1
        self.processed_users += chunk.users
        self.migrated_users += result.users
        self.tokens_revoked += result.tokens_revoked
        self.sessions_removed += result.sessions_removed

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "dry_run": self.dry_run,
            "total_users": self.total_users,
            "processed_users": self.processed_users,
            "migrated_users": self.migrated_users,
            "skipped_users": self.skipped_users,
            "failed_users": self.failed_users,
            "sessions_migrated": self.sessions_migrated,
            "tokens_revoked": self.tokens_revoked,
            "sessions_removed": self.sessions_removed,
            "skip_reasons": dict(self.skip_reasons),
            "session_kinds": dict(self.session_kinds),
            "problems": len(self.problems),
            "elapsed_seconds": round(self.elapsed, 3),
        }


# --- worker side: one Migrator per worker process -------------------------------------------------

_worker: Migrator | None = None
_indexer: SessionIndexer | None = None


def _init_worker(settings: Settings, run_id: str | None, chunks: list[Chunk] | None) -> None:
    # A rollback reads only the database: its workers connect to Redis only when the parent did.
    redis = connect(settings.redis_url) if run_id is not None else None
    _adopt(Migrator(settings, make_engine(settings.database_url), redis), run_id, chunks)


def _adopt(migrator: Migrator, run_id: str | None, chunks: list[Chunk] | None) -> None:
    """The migrator (and, for a migration, the session indexer) this process's tasks use."""
    global _worker, _indexer
    _worker = migrator
    _indexer = migrator.indexer(run_id, chunks) if run_id is not None else None


def _index(keys: list[bytes]) -> ScanReport:
    return _indexer.index(keys)


def _migrate(chunk: Chunk, run_id: str, dry_run: bool) -> ChunkResult:
    return _worker.migrate_chunk(chunk, run_id, dry_run)


def _rollback(chunk: Chunk) -> RollbackResult:
    return _worker.rollback_chunk(chunk)


class LocalDriver:
    """Runs a whole migration or rollback on this machine.

    Workers are processes when the database and Redis are servers; an embedded
    Redis or SQLite file lives in this process, so those runs use threads.
    """

    def __init__(self, settings: Settings, migrator: Migrator, workers: int = 2) -> None:
        self.settings = settings
        self.migrator = migrator
        self.workers = max(1, workers)

    def _pool(self, run_id: str | None = None, chunks: list[Chunk] | None = None) -> Executor:
        in_process = self.migrator.redis is not None and type(self.migrator.redis).__module__.startswith("fakeredis")
        sqlite = self.migrator.engine.dialect.name == "sqlite"
        if self.workers == 1 or in_process or sqlite:
            # An embedded Redis lives in this process only; SQLite takes one writer at a time.
            _adopt(self.migrator, run_id, chunks)
            return ThreadPoolExecutor(max_workers=1 if sqlite else self.workers)
        return ProcessPoolExecutor(
            max_workers=self.workers,
            # fork: workers start in milliseconds; each opens its own connections in _init_worker.
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(self.settings, run_id, chunks),
        )

    def migrate(self, chunk_size: int, dry_run: bool = False, progress: ProgressCallback | None = None
                ) -> RunSummary:
        """Plan, index the sessions (the parent SCANs, workers read and file), migrate every chunk."""
        run_id = new_run_id("migration")
        summary = RunSummary(run_id, "migration", dry_run)
        chunks = self.migrator.plan_chunks(chunk_size)
        summary.total_users, summary.total_batches = sum(c.users for c in chunks), len(chunks)
        store = self.migrator.index_store(run_id)
        store.drop(c.number for c in chunks)  # run ids are fresh, but never trust a leftover slice
        try:
            with self._pool(run_id, chunks) as pool:
                summary.phase = "indexing sessions"
                futures = [pool.submit(_index, keys) for keys in
                           scan_session_keys(self.migrator.redis, self.settings.express_session_prefix)]
                for future in as_completed(futures):
                    report = future.result()
                    summary.keys_seen += report.keys_seen
                    summary.session_kinds.update(report.kinds)
                    summary.problems += report.problems
                    if progress:
                        progress(summary)
                store.mark_complete(summary.keys_seen)
                summary.phase = "migrating"
                futures = [pool.submit(_migrate, chunk, run_id, dry_run) for chunk in chunks]
                for future in as_completed(futures):
                    summary.add_chunk(future.result())
                    if progress:
                        progress(summary)
        finally:
            store.drop(c.number for c in chunks)
        summary.phase = "done"
        summary.finished = time.monotonic()
        return summary

    def rollback(self, chunk_size: int, progress: ProgressCallback | None = None) -> RunSummary:
        summary = RunSummary(new_run_id("rollback"), "rollback", phase="rolling back")
        chunks = self.migrator.plan_rollback(chunk_size)
        summary.total_users, summary.total_batches = sum(c.users for c in chunks), len(chunks)
        if progress:
            progress(summary)
        with self._pool() as pool:
            futures = {pool.submit(_rollback, chunk): chunk for chunk in chunks}
            for future in as_completed(futures):
                summary.add_rollback(future.result(), futures[future])
                if progress:
                    progress(summary)
        summary.finished = time.monotonic()
        return summary
