"""Laravel sessions kept in Redis (``SESSION_DRIVER=redis``), written as ``CacheBasedSessionHandler`` over
``RedisStore`` writes them: key = the app's whole prefix + session id, value = ``serialize($session)``,
``SETEX`` with ``session.lifetime`` minutes.

Every call is one pipeline of single-key commands, so it works on Redis Cluster too (redis-py's cluster
pipeline sends each key to its slot's node); nothing here ever spans keys in one command.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenmigration.redis_client import RedisLike

# Keys per pipeline: large enough to amortise round trips, small enough to bound one reply.
BATCH = 1000


class RedisSessionStore:
    def __init__(self, client: RedisLike, prefix: str, lifetime_minutes: int) -> None:
        self.client = client
        self.prefix = prefix.encode("utf-8")
        # RedisStore::put: (int) max(1, $seconds)
        self.ttl = max(1, int(lifetime_minutes) * 60)

    def key(self, session_id: str) -> bytes:
        return self.prefix + session_id.encode("ascii")

    def put_many(self, session_ids: list[str], values: list[bytes]) -> None:
        for start in range(0, len(session_ids), BATCH):
            pipe = self.client.pipeline(transaction=False)
            for sid, value in zip(session_ids[start : start + BATCH], values[start : start + BATCH], strict=True):
                pipe.set(self.key(sid), value, ex=self.ttl)  # SETEX, as RedisStore::put
            pipe.execute()

    def delete_many(self, session_ids: Iterable[str]) -> int:
        """DEL each key; returns how many existed (a retry after a partial delete counts only the rest)."""
        removed = 0
        for batch in _batches(list(session_ids)):
            pipe = self.client.pipeline(transaction=False)
            for sid in batch:
                pipe.delete(self.key(sid))
            removed += sum(int(n) for n in pipe.execute())
        return removed

    def existing(self, session_ids: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for batch in _batches(list(session_ids)):
            pipe = self.client.pipeline(transaction=False)
            for sid in batch:
                pipe.exists(self.key(sid))
            found.update(sid for sid, n in zip(batch, pipe.execute(), strict=True) if int(n))
        return found

    def get_many(self, session_ids: list[str]) -> list[bytes | None]:
        values: list[bytes | None] = []
        for batch in _batches(session_ids):
            pipe = self.client.pipeline(transaction=False)
            for sid in batch:
                pipe.get(self.key(sid))
            values.extend(pipe.execute())
        return values

    def touch(self, session_id: str) -> bool:
        """A request's worth of activity: Laravel rewrites the key with a fresh TTL on every request."""
        return bool(self.client.expire(self.key(session_id), self.ttl))


def _batches(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]
