"""The per-user index of live Express sessions, built by one SCAN pass per run.

connect-redis keeps no per-user index, so a run SCANs the session keyspace once,
reads the values in MGET batches, classifies every value and files each logged-in
session under the chunk that owns its user id. Chunks then read just their own
slice (one HGETALL) instead of scanning again. Each slice is one hash key, so the
design holds on Redis Cluster too (no cross-slot commands).
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tokenmigration.engine.results import Chunk, Problem, redact_session_id
from tokenmigration.formats.express import KIND_MESSAGES, PROBLEM_KINDS, SessionDecoder, SessionKind
from tokenmigration.redis_client import RedisLike, exists_each, glob_escape, read_values

INDEX_TTL_SECONDS = 7 * 24 * 3600
SCAN_COUNT = 2000
READ_BATCH = 1000
FLUSH_AT = 50_000


@dataclass(frozen=True, slots=True)
class IndexedSession:
    session_id: str
    user_id: int
    ip_address: str | None = None
    user_agent: str | None = None


@dataclass(slots=True)
class ScanReport:
    keys_seen: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    users_with_sessions: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def logged_in(self) -> int:
        return self.kinds[SessionKind.LOGGED_IN]

    def to_dict(self) -> dict:
        return {
            "keys_seen": self.keys_seen,
            "kinds": dict(self.kinds),
            "users_with_sessions": self.users_with_sessions,
            "problems": [p.to_dict() for p in self.problems],
        }


class RedisIndexStore:
    """Index slices as Redis hashes: ``tokenmigration:index:<run>:<chunk>`` -> {session id: entry}."""

    def __init__(self, client: RedisLike, run_id: str, ttl: int = INDEX_TTL_SECONDS) -> None:
        self.client, self.run_id, self.ttl = client, run_id, ttl

    def key(self, chunk: int) -> str:
        # No "{...}": a hash tag would pin every slice of a run to one cluster slot.
        return f"tokenmigration:index:{self.run_id}:{chunk}"

    def write(self, slices: dict[int, dict[str, str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for chunk, entries in slices.items():
            pipe.hset(self.key(chunk), mapping=entries)
            pipe.expire(self.key(chunk), self.ttl)
        pipe.execute()

    def read(self, chunk: int) -> list[IndexedSession]:
        raw = self.client.hgetall(self.key(chunk))
        out = []
        for sid, entry in raw.items():
            user_id, ip, ua = json.loads(entry)
            out.append(IndexedSession(sid.decode("utf-8"), user_id, ip, ua))
        return out

    def drop(self, chunks: Iterable[int]) -> None:
        keys = [self.key(c) for c in chunks]
        for start in range(0, len(keys), 1000):
            pipe = self.client.pipeline(transaction=False)
            for key in keys[start : start + 1000]:
                pipe.delete(key)
            pipe.execute()


def scan_session_keys(client: RedisLike, prefix: str, count: int = SCAN_COUNT) -> Iterable[list[bytes]]:
    """Yield batches of session keys; on a cluster redis-py scans every primary."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=glob_escape(prefix) + "*", count=count):
        batch.append(key)
        if len(batch) >= READ_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def build_index(
    client: RedisLike,
    store: RedisIndexStore,
    chunks: Sequence[Chunk],
    prefix: str,
    user_id_path: str,
) -> ScanReport:
    """One SCAN pass: classify every session and file the logged-in ones under their chunk."""
    decoder = SessionDecoder(user_id_path)
    los = [c.lo for c in chunks]
    report = ScanReport()
    users: set[int] = set()
    pending: dict[int, dict[str, str]] = defaultdict(dict)
    buffered = 0
    prefix_len = len(prefix.encode("utf-8"))
    for keys in scan_session_keys(client, prefix):
        values = read_values(client, keys)
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue  # expired between SCAN and GET: not a live session
            report.keys_seen += 1
            try:
                sid = key[prefix_len:].decode("utf-8")
            except UnicodeDecodeError:
                report.kinds["invalid_session_id"] += 1
                report.problems.append(Problem("invalid_session_id", "session key is not UTF-8"))
                continue
            parsed = decoder.parse(value)
            report.kinds[parsed.kind] += 1
            if parsed.kind in PROBLEM_KINDS:
                report.problems.append(Problem(parsed.kind, KIND_MESSAGES[parsed.kind],
                                               session_id=redact_session_id(sid)))
                continue
            if parsed.kind is not SessionKind.LOGGED_IN:
                continue
            uid = parsed.user_id
            at = bisect.bisect_right(los, uid) - 1
            if at < 0 or uid > chunks[at].hi:
                # Within a chunk's bounds the chunk itself finds out; outside all of them, here.
                report.problems.append(Problem("unknown_user", f"no user with id {uid}", uid,
                                               redact_session_id(sid)))
                continue
            users.add(uid)
            pending[chunks[at].number][sid] = json.dumps([uid, parsed.ip_address, parsed.user_agent],
                                                         separators=(",", ":"))
            buffered += 1
            if buffered >= FLUSH_AT:
                store.write(pending)
                pending.clear()
                buffered = 0
    if pending:
        store.write(pending)
    report.users_with_sessions = len(users)
    return report


def live_sessions(client: RedisLike, prefix: str, entries: list[IndexedSession]) -> list[IndexedSession]:
    """Drop sessions that ended (logout, expiry) since the index was built."""
    alive = exists_each(client, [(prefix + e.session_id).encode("utf-8") for e in entries])
    return [e for e, ok in zip(entries, alive, strict=True) if ok]
