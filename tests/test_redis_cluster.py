"""The session index and a whole migration against a REAL Redis Cluster (3 primaries, no replicas).

compat.md §1: "On Redis Cluster, SCAN every primary and read per slot (a cross-slot MGET fails)".
These tests seed Express sessions whose keys land on every primary, then check that the plan's one
SCAN pass sees all of them, that reads work across slots, that the per-chunk index slices are spread
over the nodes (no hash tag pins them to one slot) and are all dropped at the end, and that the
counts are exact, in this process and through the local driver's worker processes.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException
from redis_cluster import LocalCluster, local_cluster, missing_binaries
from sqlalchemy import Engine, func, select

from helpers import add_users, express, ledgered_session_rows, ledgered_token_rows
from tokenmigration import local_driver
from tokenmigration.config import Settings
from tokenmigration.db.schema import sessions, tokens, users
from tokenmigration.engine.migrator import Migrator
from tokenmigration.engine.session_index import RedisIndexStore, scan_session_keys
from tokenmigration.redis_client import connect, read_values

RUN_ID = "cluster-run-1"
CHUNK_SIZE = 16
USER_IDS = list(range(3, 3 * 160 + 1, 3))  # 160 sparse ids: 3, 6, ..., 480
GHOST_IN_BOUNDS = 4  # no such user, but inside chunk 0's bounds: the chunk reports it
GHOST_BEYOND = 100_000  # beyond every chunk: the SCAN pass reports it

ODD_VALUES: dict[str, list[bytes]] = {
    "null_value": [b"null"] * 6,
    "not_an_object": [b"[]"] * 3 + [b"[1, 2]", b'"just a string"'],
    "not_json": [b"not json {", b"s:abc.def", b"{'single': 'quotes'}", b"undefined"],
    "empty_value": [b"", b"   "],
    "invalid_cookie": [b'{"cookie": null}', b'{"passport": {"user": 3}}', b'{"cookie": "x", "passport": {"user": 6}}'],
    "invalid_user_id": [express("abc"), express(True), express(-4)],
    "not_utf8": [b"\xff\xfe", b'{"cookie": {}, "x": "\xc3\x28"}'],
}
ANONYMOUS = 30


# --- the cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    reason = missing_binaries()
    if reason:  # a failure, not a skip: a skipped cluster suite looks green while proving nothing
        pytest.fail(reason + " (Debian: apt-get install redis-server redis-tools)")
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_client(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = connect(redis_cluster.url)
    assert isinstance(client, RedisCluster)
    client.flushall()  # FLUSHALL goes to every primary
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def cluster_settings(pg_engine: Engine, redis_cluster: LocalCluster) -> Settings:
    return Settings(database_url=pg_engine.url.render_as_string(hide_password=False), redis_url=redis_cluster.url)


def owner(client: RedisCluster, key: str | bytes) -> str:
    """The primary that owns the key's slot, by the server's CLUSTER KEYSLOT and the slot map."""
    slot = client.cluster_keyslot(key)
    assert slot == client.keyslot(key)  # redis-py's CRC16 agrees with the server
    return client.nodes_manager.get_node_from_slot(slot).name


def keys_per_node(cluster: LocalCluster) -> dict[int, int]:
    """DBSIZE of each node on its own (a plain client sees only that node's keys)."""
    out = {}
    for port in cluster.ports:
        node = cluster.node(port)
        out[port] = node.dbsize()
        node.close()
    return out


def index_keys(client: RedisCluster) -> list[bytes]:
    return sorted(client.scan_iter(match="tokenmigration:index:*"))


# --- seeded Express sessions ---------------------------------------------------------------------


@dataclass
class Seeded:
    keys: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    per_user: Counter[int] = field(default_factory=Counter)  # logged-in sessions of existing users
    with_ip_ua: int = 0

    @property
    def sessions_migrated(self) -> int:
        return sum(self.per_user.values())


def seed(client: RedisCluster, engine: Engine) -> Seeded:
    """Users in PostgreSQL and connect-redis values (``JSON.stringify(session)``) in the cluster."""
    add_users(engine, USER_IDS)
    rng = random.Random(20240501)
    seeded = Seeded()
    values: list[tuple[str, bytes]] = []

    def add(value: bytes, kind: str) -> None:
        sid = base64.urlsafe_b64encode(rng.randbytes(24)).decode().rstrip("=")  # express-session's uid(24)
        values.append(("sess:" + sid, value))
        seeded.kinds[kind] += 1

    for n, uid in enumerate(USER_IDS):
        for k in range(n % 4):  # 0..3 live sessions per user; users without one still get a token
            shape = (n + k) % 4
            if shape == 0:
                add(express(uid), "logged_in")
            elif shape == 1:
                add(express(str(uid)), "logged_in")  # passport may serialize a string id
            elif shape == 2:
                add(express({"id": uid, "username": f"u{uid}"}), "logged_in")
            else:
                add(express(uid, ip=f"203.0.113.{k}", userAgent="Mozilla/5.0 (X11)"), "logged_in")
                seeded.with_ip_ua += 1
            seeded.per_user[uid] += 1
    for _ in range(ANONYMOUS):
        add(express(None), "anonymous")
    for kind, odd in ODD_VALUES.items():
        for value in odd:
            add(value, kind)
    for ghost in (GHOST_IN_BOUNDS, GHOST_IN_BOUNDS, GHOST_BEYOND):
        add(express(ghost), "logged_in")

    pipe = client.pipeline(transaction=False)
    for key, value in values:
        pipe.set(key, value, ex=3600)
    assert all(pipe.execute())
    seeded.keys = [key for key, _ in values]
    return seeded


def expected_problems(seeded: Seeded) -> Counter[str]:
    problems = Counter({kind: n for kind, n in seeded.kinds.items() if kind not in ("logged_in", "anonymous")})
    problems["unknown_user"] = 3  # two sessions of the in-bounds ghost, one of the ghost beyond
    return problems


def assert_migrated(engine: Engine, seeded: Seeded) -> None:
    with engine.connect() as conn:
        migrated = conn.execute(select(func.count()).select_from(users)
                                .where(users.c.migrated_to_sanctum_at.is_not(None),
                                       users.c.migration_token_id.is_not(None))).scalar_one()
        token_count = conn.execute(select(func.count()).select_from(tokens)).scalar_one()
        per_user = Counter({uid: n for uid, n in conn.execute(select(sessions.c.user_id, func.count())
                                                              .group_by(sessions.c.user_id))})
        with_ip = conn.execute(select(func.count()).select_from(sessions)
                               .where(sessions.c.ip_address.is_not(None),
                                      sessions.c.user_agent == "Mozilla/5.0 (X11)")).scalar_one()
        ledger = (len(ledgered_token_rows(conn)), len(ledgered_session_rows(conn)))
    assert migrated == token_count == len(USER_IDS)
    assert per_user == seeded.per_user
    assert with_ip == seeded.with_ip_ua
    assert ledger == (len(USER_IDS), seeded.sessions_migrated)


# --- tests ---------------------------------------------------------------------------------------


def test_connect_returns_a_cluster_client_that_sees_every_primary(redis_cluster, cluster_client):
    assert len(cluster_client.get_primaries()) == 3
    assert {n.port for n in cluster_client.get_primaries()} == set(redis_cluster.ports)
    assert cluster_client.get_replicas() == []


def test_plan_and_migrate_every_chunk_on_a_cluster(redis_cluster, cluster_client, cluster_settings, pg_engine):
    seeded = seed(cluster_client, pg_engine)
    assert len(seeded.keys) == 298
    # The seeded keys really are spread: every primary holds some, as the nodes themselves count them.
    per_node = keys_per_node(redis_cluster)
    assert sum(per_node.values()) == len(seeded.keys)
    assert all(per_node.values()), per_node
    assert len({owner(cluster_client, key) for key in seeded.keys}) == 3

    migrator = Migrator(cluster_settings, pg_engine, cluster_client)
    plan = migrator.plan(RUN_ID, CHUNK_SIZE)

    assert plan.total_users == len(USER_IDS) and len(plan.chunks) == len(USER_IDS) // CHUNK_SIZE
    assert plan.scan.keys_seen == len(seeded.keys)  # one SCAN pass found the keys of every primary
    assert plan.scan.kinds == seeded.kinds
    assert plan.scan.logged_in == seeded.sessions_migrated + 3
    scan_problems = Counter(p.code for p in plan.scan.problems)
    assert scan_problems == expected_problems(seeded) - Counter(unknown_user=2)
    assert [p.user_id for p in plan.scan.problems if p.code == "unknown_user"] == [GHOST_BEYOND]

    # One index slice per chunk, each its own key: no hash tag, so they live on more than one node.
    store = RedisIndexStore(cluster_client, RUN_ID)
    slices = [store.key(c.number).encode() for c in plan.chunks]
    assert index_keys(cluster_client) == sorted([*slices, store.complete_key.encode()])
    assert "{" not in slices[0].decode()
    assert len({cluster_client.keyslot(k) for k in slices}) == len(slices)
    owners = {owner(cluster_client, key) for key in slices}
    assert len(owners) > 1, owners
    for key in slices:  # and each one is on the node that owns its slot, asked directly
        node = redis_cluster.node(cluster_client.get_node_from_key(key).port)
        assert node.exists(key) == 1
        assert 14 * 24 * 3600 < node.ttl(key) <= 15 * 24 * 3600  # Step Functions' redrive window
        node.close()
    indexed = sum(len(store.read(c.number)) for c in plan.chunks)
    assert indexed == seeded.sessions_migrated + 2  # plus the in-bounds ghost's two sessions

    results = [migrator.migrate_chunk(chunk, RUN_ID) for chunk in plan.chunks]

    assert sum(r.migrated_users for r in results) == len(USER_IDS)
    assert sum(r.processed_users for r in results) == len(USER_IDS)
    assert sum(r.sessions_migrated for r in results) == seeded.sessions_migrated
    assert sum(r.skipped_users for r in results) == 0 and sum(r.failed_users for r in results) == 0
    chunk_problems = [p for r in results for p in r.problems]
    assert [(p.code, p.user_id) for p in chunk_problems] == [("unknown_user", GHOST_IN_BOUNDS)] * 2
    assert Counter(p.code for p in plan.scan.problems + chunk_problems) == expected_problems(seeded)
    for problem in plan.scan.problems + chunk_problems:
        assert problem.session_id is None or len(problem.session_id) <= 9  # redacted
    assert_migrated(pg_engine, seeded)

    migrator.discard_index(RUN_ID, plan.chunks)
    assert index_keys(cluster_client) == []
    assert all(cluster_client.exists(key) == 0 for key in slices)
    # Express sessions are never touched by a migration.
    assert keys_per_node(redis_cluster) == per_node


def test_local_driver_with_worker_processes_on_a_cluster(redis_cluster, cluster_client, cluster_settings,
                                                         pg_engine, monkeypatch):
    seeded = seed(cluster_client, pg_engine)
    per_node = keys_per_node(redis_cluster)
    migrator = Migrator(cluster_settings, pg_engine, cluster_client)
    driver = local_driver.LocalDriver(cluster_settings, migrator, workers=2)
    with driver._pool() as pool:  # PostgreSQL and a real Redis: worker processes, not threads
        assert isinstance(pool, ProcessPoolExecutor)
    # Index batches of 50 keys instead of 2000, so both worker processes read values across slots.
    batches = list(scan_session_keys(cluster_client, "sess:", batch=50))
    assert len(batches) == 6 and sum(map(len, batches)) == len(seeded.keys)
    monkeypatch.setattr(local_driver, "scan_session_keys", partial(scan_session_keys, batch=50))

    summary = driver.migrate(chunk_size=CHUNK_SIZE)

    assert summary.keys_seen == len(seeded.keys)
    assert summary.session_kinds == seeded.kinds
    assert summary.total_users == summary.processed_users == summary.migrated_users == len(USER_IDS)
    assert summary.total_batches == summary.current_batch == len(USER_IDS) // CHUNK_SIZE
    assert summary.sessions_migrated == seeded.sessions_migrated
    assert (summary.skipped_users, summary.failed_users) == (0, 0)
    assert Counter(p.code for p in summary.problems) == expected_problems(seeded)
    assert sorted(p.user_id for p in summary.problems if p.code == "unknown_user") == [
        GHOST_IN_BOUNDS, GHOST_IN_BOUNDS, GHOST_BEYOND]
    assert_migrated(pg_engine, seeded)
    assert index_keys(cluster_client) == []  # the run dropped its slices on every node
    assert keys_per_node(redis_cluster) == per_node


def test_read_values_reads_across_slots_in_order_where_mget_fails(redis_cluster, cluster_client):
    rng = random.Random(7)
    keys = [f"sess:{base64.urlsafe_b64encode(rng.randbytes(24)).decode()}".encode() for _ in range(40)]
    for n, key in enumerate(keys):
        if n % 5 != 3:  # every fifth key is missing: its place holds None
            cluster_client.set(key, json.dumps({"n": n}).encode())
    expected = [None if n % 5 == 3 else json.dumps({"n": n}).encode() for n in range(len(keys))]
    assert len({cluster_client.keyslot(k) for k in keys}) > 1
    assert len({owner(cluster_client, k) for k in keys}) == 3

    assert read_values(cluster_client, keys) == expected
    assert read_values(cluster_client, list(reversed(keys))) == list(reversed(expected))
    assert read_values(cluster_client, []) == []

    # The test means something: a plain MGET over these keys fails, in redis-py and on the server.
    with pytest.raises(RedisClusterException, match="same key slot"):
        cluster_client.mget(keys)
    first = keys[0]
    port = cluster_client.get_node_from_key(first).port
    second = next(k for k in keys[1:] if cluster_client.get_node_from_key(k).port == port
                  and cluster_client.keyslot(k) != cluster_client.keyslot(first))
    node = redis_cluster.node(port)
    try:
        assert node.mget([first]) == [expected[0]]  # the node owns both keys...
        assert node.mget([second]) == [expected[keys.index(second)]]
        # ...yet the server refuses one MGET across their two slots (-CROSSSLOT, redis-py's ClusterCrossSlotError)
        with pytest.raises(ClusterCrossSlotError, match="same slot"):
            node.mget([first, second])
    finally:
        node.close()


def test_tiny_resumable_slices_per_primary_index_exactly_what_one_pass_does(cluster_client, cluster_settings,
                                                                            pg_engine):
    """The state machine's plan on a cluster: one cursor per primary, each resumed slice by slice."""
    from tokenmigration.engine.session_index import build_index, index_slice

    seed(cluster_client, pg_engine)
    migrator = Migrator(cluster_settings, pg_engine, cluster_client)
    chunks = migrator.plan_chunks(CHUNK_SIZE)

    def index_of(run_id: str) -> dict[int, list]:
        store = migrator.index_store(run_id)
        return {c.number: sorted((s.session_id, s.user_id, s.ip_address, s.user_agent) for s in store.read(c.number))
                for c in chunks}

    whole = build_index(migrator.indexer("one-pass", chunks))

    nodes = migrator.start_index("sliced", chunks)
    assert len(nodes) == 3  # every primary, each with its own cursor
    indexer, keys_seen, kinds, problems, slices = migrator.indexer("sliced", chunks), 0, Counter(), Counter(), 0
    for node in nodes:
        cursor = 0
        while True:
            part = index_slice(indexer, node, cursor, deadline=0.0, scan_count=4)  # deadline passed: one SCAN
            slices += 1
            keys_seen += part.report.keys_seen
            kinds.update(part.report.kinds)
            problems.update(p.code for p in part.report.problems)
            if part.done:
                break
            cursor = part.cursor
    migrator.finish_index("sliced", keys_seen)

    assert slices > 3 * 5
    assert keys_seen == whole.keys_seen == 298
    assert kinds == whole.kinds and problems == Counter(p.code for p in whole.problems)
    assert index_of("sliced") == index_of("one-pass")
