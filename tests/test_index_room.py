"""A plan refuses to fill a Redis that has no room under its maxmemory for the run's session index: Redis would
evict keys to make room, Express sessions among them (engine.index_room). A private redis-server, so that
setting maxmemory touches no other test's Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis
from redis_cluster import _free_ports, missing_binaries

from helpers import add_users
from tokenmigration.cli.errors import describe
from tokenmigration.config import Settings
from tokenmigration.engine.errors import IndexWontFit
from tokenmigration.engine.migrator import Migrator


@pytest.fixture
def small_redis() -> Iterator[redis.Redis]:
    if missing_binaries():  # CI installs redis-server: a missing one is a failure, not a skip
        pytest.fail(missing_binaries())
    (port,) = _free_ports(1)
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir, "--maxmemory", "8mb", "--maxmemory-policy", "volatile-lru"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        try:
            for _ in range(400):  # bounded polling until it answers (no timing assertion)
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    assert server.poll() is None, "redis-server exited"
                    time.sleep(0.05)
            yield client
        finally:
            client.close()
            server.kill()
            server.wait()


def test_a_plan_refuses_a_redis_without_room_for_the_index(pg_engine, small_redis):
    settings = Settings(database_url=pg_engine.url.render_as_string(hide_password=False))
    pipe = small_redis.pipeline(transaction=False)
    for n in range(40_000):  # no TTL: the fill itself evicts nothing
        pipe.set(f"sess:{n}", b'{"cookie":{},"passport":{"user":1}}')
    pipe.execute()
    add_users(pg_engine, [1])
    migrator = Migrator(settings, pg_engine, small_redis)

    with pytest.raises(IndexWontFit) as refused:
        migrator.plan_chunks(10)
    message = str(refused.value)
    assert "under its maxmemory of 8 MB (policy volatile-lru)" in message
    assert "200 bytes for each of its 40,000 keys" in message and "INDEX_MEMORY_CHECK=false" in message
    assert describe(refused.value) == message  # the CLI prints it as its one line
    assert small_redis.dbsize() == 40_000  # nothing written, nothing evicted

    assert Migrator(settings.replace(index_memory_check=False), pg_engine, small_redis).plan_chunks(10)
    small_redis.config_set("maxmemory", "64mb")
    assert [c.users for c in migrator.plan_chunks(10)] == [1]
    small_redis.config_set("maxmemory", "0")  # no limit: Redis never evicts
    assert migrator.plan_chunks(10)


def test_migrate_says_why_in_one_line_and_starts_nothing(pg_engine, small_redis):
    """At the terminal: the refusal alone, exit 2, no "stopped early" table and no "run again to continue"
    (giving Redis room is what continues)."""
    pipe = small_redis.pipeline(transaction=False)
    for n in range(40_000):
        pipe.set(f"sess:{n}", b'{"cookie":{},"passport":{"user":1}}')
    pipe.execute()
    add_users(pg_engine, [1])
    port = small_redis.connection_pool.connection_kwargs["port"]
    env = {**os.environ, "DATABASE_URL": pg_engine.url.render_as_string(hide_password=False),
           "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    done = subprocess.run([sys.executable, "-m", "tokenmigration.cli.main", "migrate", "--yes"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tokenmigration: Redis has ") and lines[0].endswith(
        "or set INDEX_MEMORY_CHECK=false if you know the index fits"), done.stderr
    assert "stopped early" not in done.stdout and "Traceback" not in done.stderr
    assert small_redis.dbsize() == 40_000
