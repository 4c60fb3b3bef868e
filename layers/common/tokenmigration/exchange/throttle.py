"""A per-source limit on failed exchanges: fixed windows, counted in memory or in Redis.

Only failures count (``record_failure``); a source that is over the limit is refused before any
work (``blocked``), whatever it presents, until its window ends. Successes never count, so many
users behind one address can exchange as long as they do not fail. The Redis counter is one key
per source per window (created with its expiry by ``SET NX EX``, then ``INCR``), so every Lambda
container shares it, and a single key per command keeps it valid on Redis Cluster. The source (an IP address)
is hashed into the key name.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

from tokenmigration.config import Settings
from tokenmigration.redis_client import RedisLike

Clock = Callable[[], float]
KEY_PREFIX = "tokenmigration:exchange:failures:"


class FailureThrottle(Protocol):
    window_seconds: int

    def blocked(self, source: str) -> bool:
        """True when ``source`` has reached the limit of failures in the current window."""

    def record_failure(self, source: str) -> None:
        """Count one failed attempt of ``source`` in the current window."""


def _check(limit: int, window_seconds: int) -> None:
    if limit < 1 or window_seconds < 1:
        raise ValueError("limit and window_seconds must be at least 1")


class InMemoryFailureThrottle:
    """For one process (local server, tests): a dict of counters, old windows dropped as time passes."""

    def __init__(self, limit: int = 20, window_seconds: int = 300, clock: Clock = time.time) -> None:
        _check(limit, window_seconds)
        self.limit, self.window_seconds, self._clock = limit, window_seconds, clock
        self._counts: dict[str, int] = {}
        self._window = -1
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = time.time) -> InMemoryFailureThrottle:
        return cls(settings.exchange_failure_limit, settings.exchange_failure_window_seconds, clock)

    def _current(self) -> dict[str, int]:
        window = int(self._clock() // self.window_seconds)
        if window != self._window:
            self._window, self._counts = window, {}
        return self._counts

    def blocked(self, source: str) -> bool:
        with self._lock:
            return self._current().get(source, 0) >= self.limit

    def record_failure(self, source: str) -> None:
        with self._lock:
            counts = self._current()
            counts[source] = counts.get(source, 0) + 1


class RedisFailureThrottle:
    """Shared by every container: ``<prefix><sha256(source)[:32]>:<window number>`` counters."""

    def __init__(self, redis: RedisLike, limit: int = 20, window_seconds: int = 300, clock: Clock = time.time,
                 prefix: str = KEY_PREFIX) -> None:
        _check(limit, window_seconds)
        self.redis, self.limit, self.window_seconds, self._clock, self.prefix = (
            redis, limit, window_seconds, clock, prefix)

    @classmethod
    def from_settings(cls, settings: Settings, redis: RedisLike, clock: Clock = time.time) -> RedisFailureThrottle:
        return cls(redis, settings.exchange_failure_limit, settings.exchange_failure_window_seconds, clock)

    def key(self, source: str) -> str:
        window = int(self._clock() // self.window_seconds)
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]
        return f"{self.prefix}{digest}:{window}"

    def blocked(self, source: str) -> bool:
        count = self.redis.get(self.key(source))
        return count is not None and int(count) >= self.limit

    def record_failure(self, source: str) -> None:
        key = self.key(source)
        # SET NX EX creates the counter with its expiry before the first INCR (which keeps the TTL), so no
        # counter ever lives without one; no MULTI needed, which cluster pipelines may not offer. The window
        # number is in the key: the expiry only collects it once the window is over.
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, 0, ex=self.window_seconds * 2, nx=True)
        pipe.incr(key)
        pipe.execute()
