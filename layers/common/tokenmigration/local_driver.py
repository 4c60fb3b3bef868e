"""The one-machine driver: the same engine calls the Lambdas make, over a pool of workers."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError

from tokenmigration.config import Settings
from tokenmigration.db.connection import make_engine
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.results import Chunk, ChunkResult, Problem, RollbackResult
from tokenmigration.engine.runs import new_run_id
from tokenmigration.engine.session_index import ScanReport, SessionIndexer, scan_session_keys
from tokenmigration.redis_client import connect
from tokenmigration.workflow.errors import REDIS_TRANSIENT, is_transient_database_error

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
    # Transient failures retried, by "database: <error type>" / "Redis: <error type>".
    retries: Counter[str] = field(default_factory=Counter)
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
            "retries": dict(self.retries),
            "elapsed_seconds": round(self.elapsed, 3),
        }


# --- worker side: one Migrator per worker process -------------------------------------------------

_worker: Migrator | None = None
_indexer: SessionIndexer | None = None


def _init_worker(settings: Settings, run_id: str | None, chunks: list[Chunk] | None, parent: int) -> None:
    die_with_parent(parent)
    # A rollback reads only the database: its workers connect to Redis only when the parent did.
    redis = connect(settings.redis_url) if run_id is not None else None
    _adopt(Migrator(settings, make_engine(settings.database_url), redis), run_id, chunks)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """A worker ends when the CLI ends, however it ends (SIGKILL included), so that no orphan keeps a database
    connection and a chunk's row locks. Ctrl-C and SIGTERM are the parent's to handle: it lets running
    chunks commit and starts no new one."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # fork copied the parent's "SIGTERM is Ctrl-C" handler
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:  # elsewhere: notice the parent's end within a second
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _adopt(migrator: Migrator, run_id: str | None, chunks: list[Chunk] | None) -> None:
    """The migrator (and, for a migration, the session indexer) this process's tasks use."""
    global _worker, _indexer
    _worker = migrator
    _indexer = migrator.indexer(run_id, chunks) if run_id is not None else None


def _later(delay: float, task: Callable[..., Any], *args: Any) -> Any:
    """A retry, in the worker: wait out the backoff there, so the parent keeps collecting other chunks."""
    if delay > 0:
        time.sleep(delay)
    return task(*args)


def _index(keys: list[bytes]) -> ScanReport:
    return _indexer.index(keys)


def _migrate(chunk: Chunk, run_id: str, dry_run: bool) -> ChunkResult:
    return _worker.migrate_chunk(chunk, run_id, dry_run)


def _rollback(chunk: Chunk, run_id: str) -> RollbackResult:
    return _worker.rollback_chunk(chunk, run_id)


# --- retries and stopping -----------------------------------------------------------------------------


def transient_kind(error: BaseException) -> str | None:
    """"database" or "Redis" for a failure another attempt a little later is likely not to meet, else None
    (a bug or a refusal: retrying it only delays the report)."""
    if isinstance(error, DBAPIError) and is_transient_database_error(error):
        return "database"
    if isinstance(error, REDIS_TRANSIENT):
        return "Redis"
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff, as the state machines' Retry does: ``attempts`` tries in all, the n-th
    retry after about ``base * 2**(n-1)`` seconds (at most ``cap``), half of it jittered so that workers which
    failed together do not come back together."""

    attempts: int = 6
    base: float = 1.0
    cap: float = 30.0

    def delay(self, retry: int) -> float:
        full = min(self.cap, self.base * 2 ** (retry - 1))
        return full / 2 + random.uniform(0, full / 2)


class RunStopped(Exception):
    """The run ended early; ``summary`` holds what was committed. ``cause`` is None when interrupted."""

    def __init__(self, summary: RunSummary, cause: BaseException | None = None) -> None:
        super().__init__(str(cause) if cause else "interrupted")
        self.summary = summary
        self.cause = cause


class LocalDriver:
    """Runs a whole migration or rollback on this machine.

    Workers are processes when the database and Redis are servers; an embedded
    Redis or SQLite file lives in this process, so those runs use threads. A transient database or Redis
    failure is retried with backoff (every chunk is one transaction, and every write path idempotent); when
    the retries run out, or on Ctrl-C / SIGTERM, running chunks finish, no new one starts, and ``RunStopped``
    carries the summary of what was committed.
    """

    def __init__(self, settings: Settings, migrator: Migrator, workers: int = 2,
                 retry: RetryPolicy | None = None, notice: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.migrator = migrator
        self.workers = max(1, workers)
        self.retry = retry or RetryPolicy()
        self.notice = notice or (lambda _line: None)

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
            initargs=(self.settings, run_id, chunks, os.getpid()),
        )

    def _attempt(self, summary: RunSummary, retry: int, error: BaseException) -> float:
        """The delay before retry number ``retry`` after ``error``; raises when it is not worth one."""
        kind = transient_kind(error)
        if kind is None or retry >= self.retry.attempts:
            raise error
        summary.retries[f"{kind}: {type(error).__name__}"] += 1
        delay = self.retry.delay(retry)
        self.notice(f"{kind} failed ({type(error).__name__}); retry {retry} of {self.retry.attempts - 1} "
                    f"in {delay:.1f} s")
        return delay

    def _retrying(self, summary: RunSummary, call: Callable[[], Any]) -> Any:
        """A step of the parent's own (planning, the index's bookkeeping), retried like a chunk."""
        retry = 0
        while True:
            try:
                return call()
            except Exception as error:
                retry += 1
                time.sleep(self._attempt(summary, retry, error))

    def _run_tasks(self, pool: Executor, summary: RunSummary, tasks: list[tuple[Callable[..., Any], tuple]],
                   collect: Callable[[int, Any], None], retry_each: bool = True) -> None:
        """Every task to completion, each retried on its own; on a failure that is not retried, or when the
        retries run out, or on Ctrl-C: cancel what has not started, let what runs finish, then raise."""
        pending: dict[Future, tuple[int, int]] = {pool.submit(fn, *args): (n, 0) for n, (fn, args) in enumerate(tasks)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    n, retry = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as error:
                        if not retry_each:
                            raise
                        delay = self._attempt(summary, retry + 1, error)
                        fn, args = tasks[n]
                        pending[pool.submit(_later, delay, fn, *args)] = (n, retry + 1)
                        continue
                    collect(n, result)
        except BaseException:
            self._let_running_finish(pending, "chunk(s) to commit or roll back")
            raise

    def _stream_tasks(self, pool: Executor, tasks: Iterator[tuple[Callable[..., Any], tuple]],
                      collect: Callable[[int, Any], None], window: int) -> None:
        """Every task of a lazy iterator to completion with at most ``window`` submitted at a time; a failure
        or Ctrl-C cancels what has not started, lets what runs finish, then raises."""
        pending: dict[Future, int] = {}
        submitted = 0

        def fill() -> None:
            nonlocal submitted
            while len(pending) < window:
                task = next(tasks, None)
                if task is None:
                    return
                fn, args = task
                pending[pool.submit(fn, *args)] = submitted
                submitted += 1

        try:
            fill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    collect(pending.pop(future), future.result())
                fill()
        except BaseException:
            self._let_running_finish(pending, "task(s) to finish")
            raise

    def _let_running_finish(self, pending: Collection[Future], what: str) -> None:
        """On a failure or Ctrl-C: cancel what has not started, say so, and wait for what runs."""
        running = sum(1 for future in pending if not future.cancel())
        if running:
            self.notice(f"stopping: waiting for {running} running {what}")
        wait(pending)

    def migrate(self, chunk_size: int, dry_run: bool = False, progress: ProgressCallback | None = None
                ) -> RunSummary:
        """Plan, index the sessions (the parent SCANs, workers read and file), migrate every chunk."""
        run_id = new_run_id("migration")
        summary = RunSummary(run_id, "migration", dry_run)
        try:
            chunks = self._retrying(summary, lambda: self.migrator.plan_chunks(chunk_size))
        except BaseException as error:
            raise RunStopped(summary, None if isinstance(error, KeyboardInterrupt) else error) from error
        summary.total_users, summary.total_batches = sum(c.users for c in chunks), len(chunks)
        store = self.migrator.index_store(run_id)
        try:
            with self._pool(run_id, chunks) as pool:
                self._index_sessions(pool, summary, store, chunks, progress)
                summary.phase = "migrating"

                def collect(_n: int, result: ChunkResult) -> None:
                    summary.add_chunk(result)
                    if progress:
                        progress(summary)

                self._run_tasks(pool, summary, [(_migrate, (chunk, run_id, dry_run)) for chunk in chunks], collect)
        except BaseException as error:
            summary.finished = time.monotonic()
            raise RunStopped(summary, None if isinstance(error, KeyboardInterrupt) else error) from error
        finally:
            with contextlib.suppress(Exception):  # the slices expire anyway; never hide the run's own error
                store.drop(c.number for c in chunks)
        summary.phase = "done"
        summary.finished = time.monotonic()
        return summary

    def _index_sessions(self, pool: Executor, summary: RunSummary, store, chunks: list[Chunk],
                        progress: ProgressCallback | None) -> None:
        """SCAN the session store once and file every key under its user's chunk. A failure of Redis midway
        starts the phase over (a SCAN cursor does not survive a restart): the slices are dropped and counted
        again, so nothing is counted twice."""
        retry = 0
        while True:
            summary.phase = "indexing sessions"
            summary.keys_seen = 0
            summary.session_kinds.clear()
            summary.problems.clear()
            try:
                store.drop(c.number for c in chunks)  # run ids are fresh, but never trust a leftover slice

                def collect(_n: int, report: ScanReport) -> None:
                    summary.keys_seen += report.keys_seen
                    summary.session_kinds.update(report.kinds)
                    summary.problems.extend(report.problems)
                    if progress:
                        progress(summary)

                # The SCAN is consumed as workers take batches, a few in flight per worker: the parent never
                # holds the keyspace (2 million keys were ~600 MiB), so memory stays flat as the store grows.
                # One failed batch starts the phase over (below), so batches are not retried on their own.
                batches = scan_session_keys(self.migrator.redis, self.settings.express_session_prefix)
                self._stream_tasks(pool, ((_index, (keys,)) for keys in batches), collect, 2 * self.workers)
                store.mark_complete(summary.keys_seen, len(chunks))
                return
            except Exception as error:
                retry += 1
                time.sleep(self._attempt(summary, retry, error))

    def rollback(self, chunk_size: int, progress: ProgressCallback | None = None) -> RunSummary:
        run_id = new_run_id("rollback")
        summary = RunSummary(run_id, "rollback", phase="rolling back")
        try:
            chunks = self._retrying(summary, lambda: self.migrator.plan_rollback(chunk_size))
            summary.total_users, summary.total_batches = sum(c.users for c in chunks), len(chunks)
            if progress:
                progress(summary)
            with self._pool() as pool:

                def collect(n: int, result: RollbackResult) -> None:
                    summary.add_rollback(result, chunks[n])
                    if progress:
                        progress(summary)

                # With the run id, a retried chunk reports what the run removed in it, whichever attempt did.
                self._run_tasks(pool, summary, [(_rollback, (chunk, run_id)) for chunk in chunks], collect)
        except BaseException as error:
            summary.finished = time.monotonic()
            raise RunStopped(summary, None if isinstance(error, KeyboardInterrupt) else error) from error
        summary.finished = time.monotonic()
        return summary
