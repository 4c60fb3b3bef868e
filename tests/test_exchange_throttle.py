"""The exchange's per-source failure limit, in memory and in the real Redis; time is a test clock, never a sleep."""

from __future__ import annotations

import hashlib

import pytest

from tokenmigration.config import Settings
from tokenmigration.exchange import InMemoryFailureThrottle, RedisFailureThrottle


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def make_throttle(request):
    def make(limit: int, window: int, clock: Clock):
        if request.param == "memory":
            return InMemoryFailureThrottle(limit, window, clock)
        return RedisFailureThrottle(request.getfixturevalue("redis_client"), limit, window, clock)
    return make


def test_blocks_after_the_limit_within_a_window(make_throttle):
    clock = Clock(1_700_000_000.0)  # a window boundary: 1_700_000_000 is a multiple of 100
    throttle = make_throttle(3, 100, clock)
    for _ in range(2):
        throttle.record_failure("203.0.113.1")
    assert not throttle.blocked("203.0.113.1")
    throttle.record_failure("203.0.113.1")
    assert throttle.blocked("203.0.113.1")
    assert not throttle.blocked("203.0.113.2")  # per source
    clock.now += 99.9
    assert throttle.blocked("203.0.113.1")  # same window
    clock.now += 0.1
    assert not throttle.blocked("203.0.113.1")  # a new window starts clean


def test_windows_are_fixed_not_sliding(make_throttle):
    clock = Clock(1_700_000_090.0)
    throttle = make_throttle(2, 100, clock)
    throttle.record_failure("s")
    clock.now += 10  # next window
    throttle.record_failure("s")
    assert not throttle.blocked("s")


def test_redis_counters_expire_and_hide_the_address(redis_client):
    clock = Clock()
    throttle = RedisFailureThrottle(redis_client, 5, 60, clock)
    throttle.record_failure("2001:db8::1")
    keys = redis_client.keys("tokenmigration:exchange:failures:*")
    assert len(keys) == 1
    assert b"2001" not in keys[0] and hashlib.sha256(b"2001:db8::1").hexdigest()[:32].encode() in keys[0]
    assert 0 < redis_client.ttl(keys[0]) <= 120
    assert redis_client.get(keys[0]) == b"1"


def test_redis_throttle_is_shared_between_instances(redis_client):
    """Two Lambda containers: two throttle objects on the same Redis see one count."""
    clock = Clock()
    first = RedisFailureThrottle(redis_client, 2, 60, clock)
    second = RedisFailureThrottle(redis_client, 2, 60, clock)
    first.record_failure("s")
    second.record_failure("s")
    assert first.blocked("s") and second.blocked("s")


def test_from_settings(redis_client):
    settings = Settings(exchange_failure_limit=7, exchange_failure_window_seconds=42)
    memory = InMemoryFailureThrottle.from_settings(settings)
    shared = RedisFailureThrottle.from_settings(settings, redis_client)
    assert (memory.limit, memory.window_seconds) == (shared.limit, shared.window_seconds) == (7, 42)


@pytest.mark.parametrize(("limit", "window"), [(0, 10), (5, 0)])
def test_limits_must_be_positive(limit, window):
    with pytest.raises(ValueError):
        InMemoryFailureThrottle(limit, window)
