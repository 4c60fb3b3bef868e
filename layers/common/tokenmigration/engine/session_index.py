"""The per-user index of live Express sessions, built by one SCAN pass per run.

connect-redis keeps no per-user index, so a run SCANs the session keyspace once,
reads the values in MGET batches, classifies every value and files each logged-in
session under the chunk that owns its user id. A chunk then reads just its own
slice with one GET instead of scanning again.

Each slice is a single string key holding JSON array elements appended by
``APPEND`` (one command per slice per flush, one GET and one ``json.loads`` per
chunk): redis-py spends microseconds per command argument, so a hash with a
field per session costs several times more. Every slice is its own key, so the
design holds on Redis Cluster (no cross-slot command), and key batches can be
indexed by several workers at once.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from tokenmigration.engine.errors import SessionIndexMissing, SessionStoreChanged
from tokenmigration.engine.results import Chunk, Problem, redact_session_id
from tokenmigration.formats.express import KIND_MESSAGES, PROBLEM_KINDS, SessionDecoder, SessionKind
from tokenmigration.redis_client import RedisLike, glob_escape, is_cluster, read_values

# Step Functions can redrive a failed execution for 14 days; its chunks still need the index then.
INDEX_TTL_SECONDS = 15 * 24 * 3600
SCAN_COUNT = 5000
READ_BATCH = 2000
_PLAIN_SID = re.compile(r"[A-Za-z0-9_-]+\Z")
# Text JSON can carry between quotes as it is: no quote, backslash or control character.
_PLAIN_TEXT = re.compile(r'[^"\\\x00-\x1f\x7f\u2028\u2029]*\Z')


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
    problems: list[Problem] = field(default_factory=list)

    @property
    def logged_in(self) -> int:
        return self.kinds[SessionKind.LOGGED_IN]

    def merge(self, other: ScanReport) -> None:
        self.keys_seen += other.keys_seen
        self.kinds.update(other.kinds)
        self.problems += other.problems

    def to_dict(self) -> dict:
        return {
            "keys_seen": self.keys_seen,
            "kinds": {str(k): v for k, v in self.kinds.items()},
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass(slots=True)
class SliceCounts:
    """What a resumable scan carries from one slice to the next: counts only, never the problems
    themselves (a state machine's payload is capped at 256 KiB; the problems go to the run ledger)."""

    keys_seen: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    problems: int = 0

    def add(self, report: ScanReport) -> None:
        self.keys_seen += report.keys_seen
        self.kinds.update({str(k): v for k, v in report.kinds.items()})
        self.problems += len(report.problems)

    def merge(self, other: SliceCounts) -> None:
        self.keys_seen += other.keys_seen
        self.kinds.update(other.kinds)
        self.problems += other.problems

    def to_dict(self) -> dict:
        return {"keys_seen": self.keys_seen, "kinds": dict(sorted(self.kinds.items())), "problems": self.problems}

    @classmethod
    def from_dict(cls, data: dict | None) -> SliceCounts:
        data = data or {}
        kinds = data.get("kinds") or {}
        if not isinstance(kinds, dict) or not all(isinstance(v, int) for v in kinds.values()):
            raise ValueError("kinds must map session kinds to counts")
        return cls(int(data.get("keys_seen") or 0), Counter({str(k): int(v) for k, v in kinds.items()}),
                   int(data.get("problems") or 0))


@dataclass(frozen=True, slots=True)
class ScanSlice:
    """One bounded part of a node's SCAN: where the next slice starts (0 = the node is done)."""

    cursor: int
    report: ScanReport
    scan_calls: int

    @property
    def done(self) -> bool:
        return self.cursor == 0


def _json_text(value: str | None) -> str | None:
    if value is None:
        return "null"
    return f'"{value}"' if _PLAIN_TEXT.match(value) else None


def _entry(sid: str, user_id: int, ip: str | None, ua: str | None) -> str:
    """One JSON array element, with a leading comma; built by hand for the common shapes."""
    if _PLAIN_SID.match(sid):
        ip_json, ua_json = _json_text(ip), _json_text(ua)
        if ip_json is not None and ua_json is not None:
            return f',["{sid}",{user_id},{ip_json},{ua_json}]'
    return "," + json.dumps([sid, user_id, ip, ua], separators=(",", ":"), ensure_ascii=False)


class RedisIndexStore:
    """Index slices as Redis strings: ``tokenmigration:index:<run>:<chunk>``."""

    def __init__(self, client: RedisLike, run_id: str, ttl: int = INDEX_TTL_SECONDS) -> None:
        self.client, self.run_id, self.ttl = client, run_id, ttl

    def key(self, chunk: int) -> str:
        # No "{...}": a hash tag would pin every slice of a run to one cluster slot.
        return f"tokenmigration:index:{self.run_id}:{chunk}"

    @property
    def complete_key(self) -> str:
        return f"tokenmigration:index:{self.run_id}:complete"

    def mark_complete(self, keys_seen: int, chunk_count: int | None = None) -> None:
        """Written once the whole SCAN is filed: a chunk with no slice then means "no sessions",
        not "index expired or never built".

        With ``chunk_count``, the marker also records which chunks have a slice (one bit each, 6 KB for
        50,000 chunks): a slice that disappears afterwards (evicted by a Redis short of memory, deleted by
        hand) is then an error when its chunk runs, not a chunk whose users silently lose their sessions."""
        value = str(keys_seen)
        if chunk_count is not None:
            pipe = self.client.pipeline(transaction=False)
            for chunk in range(chunk_count):
                pipe.exists(self.key(chunk))  # one key per command: no cross-slot EXISTS on a cluster
            present = pipe.execute() if chunk_count else []
            bits = bytearray((chunk_count + 7) // 8)
            for chunk, found in enumerate(present):
                if found:
                    bits[chunk // 8] |= 1 << (chunk % 8)
            value += ":" + base64.b64encode(bytes(bits)).decode("ascii")
        self.client.set(self.complete_key, value, ex=self.ttl)

    def is_complete(self) -> bool:
        return bool(self.client.exists(self.complete_key))

    def _slice_written(self, marker: bytes, chunk: int) -> bool:
        """Whether the marker says the plan wrote a slice for ``chunk`` (markers of older versions hold no
        map: then a missing slice reads as no sessions, as it used to)."""
        _, _, encoded = marker.partition(b":")
        if not encoded:
            return False
        bits = base64.b64decode(encoded)
        return chunk // 8 < len(bits) and bool(bits[chunk // 8] & (1 << (chunk % 8)))

    def append(self, slices: dict[int, list[str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for chunk, entries in slices.items():
            pipe.append(self.key(chunk), "".join(entries))
            pipe.expire(self.key(chunk), self.ttl)
        pipe.execute()

    def read(self, chunk: int) -> list[IndexedSession]:
        """The chunk's sessions; refuses when the index is incomplete rather than migrate users
        without their sessions (which would log them out)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.complete_key)
        pipe.get(self.key(chunk))
        marker, blob = pipe.execute()
        if marker is None:
            raise SessionIndexMissing(
                f"the session index of run {self.run_id} is missing or incomplete (expired, discarded, "
                "or the plan did not finish): start a new run"
            )
        if not blob:
            if self._slice_written(marker, chunk):
                raise SessionIndexMissing(
                    f"the session index slice of chunk {chunk} of run {self.run_id} is gone although the plan "
                    "wrote it (evicted by a Redis short of memory, or deleted): migrating the chunk now would "
                    "log its users out; give Redis room for the index and start a new run"
                )
            return []
        # SCAN may return a key twice and a retried plan appends again: the last entry per id wins.
        entries = {e[0]: e for e in json.loads(b"[" + blob[1:] + b"]")}
        return [IndexedSession(sid, uid, ip, ua) for sid, uid, ip, ua in entries.values()]

    def drop(self, chunks: Iterable[int]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.complete_key)
        for chunk in chunks:
            pipe.delete(self.key(chunk))  # one key per command: no cross-slot DEL on a cluster
        pipe.execute()


def scan_session_keys(client: RedisLike, prefix: str, batch: int = READ_BATCH) -> Iterator[list[bytes]]:
    """Yield batches of session keys; on a cluster redis-py scans every primary."""
    keys: list[bytes] = []
    for key in client.scan_iter(match=glob_escape(prefix) + "*", count=SCAN_COUNT):
        keys.append(key)
        if len(keys) >= batch:
            yield keys
            keys = []
    if keys:
        yield keys


class SessionIndexer:
    """Reads, classifies and files one batch of session keys at a time."""

    def __init__(self, client: RedisLike, store: RedisIndexStore, chunks: Sequence[Chunk], prefix: str,
                 user_id_path: str) -> None:
        self.client, self.store, self.chunks, self.prefix = client, store, chunks, prefix
        self.decoder = SessionDecoder(user_id_path)
        self.los = [c.lo for c in chunks]
        self.prefix_len = len(prefix.encode("utf-8"))

    def index(self, keys: list[bytes]) -> ScanReport:
        report = ScanReport()
        pending: dict[int, list[str]] = defaultdict(list)
        chunks, los, parse = self.chunks, self.los, self.decoder.parse
        for key, value in zip(keys, read_values(self.client, keys), strict=True):
            if value is None:
                continue  # expired between SCAN and GET: not a live session
            report.keys_seen += 1
            try:
                sid = key[self.prefix_len :].decode("utf-8")
            except UnicodeDecodeError:
                report.kinds["invalid_session_id"] += 1
                report.problems.append(Problem("invalid_session_id", "session key is not UTF-8"))
                continue
            parsed = parse(value)
            kind = parsed.kind
            report.kinds[kind] += 1
            if kind is not SessionKind.LOGGED_IN:
                if kind in PROBLEM_KINDS:
                    report.problems.append(Problem(kind.value, KIND_MESSAGES[kind],
                                                   session_id=redact_session_id(sid)))
                continue
            uid = parsed.user_id
            at = bisect.bisect_right(los, uid) - 1
            if at < 0 or uid > chunks[at].hi:
                # Inside a chunk's bounds the chunk itself finds out; outside all of them, here.
                report.problems.append(Problem("unknown_user", f"no user with id {uid}", uid,
                                               redact_session_id(sid)))
                continue
            pending[chunks[at].number].append(_entry(sid, uid, parsed.ip_address, parsed.user_agent))
        if pending:
            self.store.append(pending)
        return report


SINGLE_NODE = "single"


def scan_nodes(client: RedisLike) -> list[str]:
    """The nodes a resumable scan walks, one cursor each: every cluster primary, or the one server."""
    if is_cluster(client):
        return sorted(node.name for node in client.get_primaries())
    return [SINGLE_NODE]


def node_client(client: RedisLike, node: str):
    """A plain client for one node: a SCAN cursor is only meaningful on the node that handed it out."""
    if not is_cluster(client):
        if node != SINGLE_NODE:
            raise SessionStoreChanged(f"the plan scanned cluster node {node!r} but REDIS_URL is a single server")
        return client
    found = client.get_node(node_name=node)
    if found is None or found not in client.get_primaries():
        raise SessionStoreChanged(
            f"Redis Cluster node {node} is no longer a primary (failover or resharding during the plan): "
            "start a new run"
        )
    return client.get_redis_connection(found)


def index_slice(indexer: SessionIndexer, node: str, cursor: int, deadline: float, *,
                scan_count: int = SCAN_COUNT, clock=time.monotonic) -> ScanSlice:
    """SCAN one node from ``cursor`` until the node is done or ``deadline`` (``clock``) has passed.

    At least one SCAN call is made, so a slice always moves on. Running a slice again from the same cursor
    is harmless: it files the same sessions again and a slice's reader keeps the last entry per session id.
    """
    if cursor < 0:
        raise ValueError("cursor must not be negative")
    target = node_client(indexer.client, node)
    match = glob_escape(indexer.prefix) + "*"
    report, calls = ScanReport(), 0
    while True:
        cursor, keys = target.scan(cursor=cursor, match=match, count=scan_count)
        calls += 1
        for start in range(0, len(keys), READ_BATCH):
            report.merge(indexer.index(keys[start:start + READ_BATCH]))
        if cursor == 0 or clock() >= deadline:
            return ScanSlice(int(cursor), report, calls)


def build_index(indexer: SessionIndexer) -> ScanReport:
    """The whole SCAN pass in this process (the plan Lambda; the local driver spreads batches)."""
    indexer.store.drop(c.number for c in indexer.chunks)
    report = ScanReport()
    for keys in scan_session_keys(indexer.client, indexer.prefix):
        report.merge(indexer.index(keys))
    indexer.store.mark_complete(report.keys_seen, len(indexer.chunks))
    return report
