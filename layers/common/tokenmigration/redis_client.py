"""Redis clients for the Express session store: a single node, or a Cluster."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import redis
from redis.cluster import RedisCluster

from tokenmigration.config import ConfigError

RedisLike = redis.Redis | RedisCluster


def connect(url: str | None) -> RedisLike:
    """Connect from REDIS_URL; ``?cluster=true`` selects Redis Cluster mode."""
    if not url:
        raise ConfigError("REDIS_URL must be set")
    query = parse_qs(urlsplit(url).query)
    cluster = query.pop("cluster", ["false"])[0].lower() in ("1", "true", "yes")
    if cluster:
        base = url.split("?", 1)[0]
        return RedisCluster.from_url(base, decode_responses=False)
    return redis.Redis.from_url(url.replace("cluster=false", "").rstrip("?&"), decode_responses=False)


def is_cluster(client: RedisLike) -> bool:
    return isinstance(client, RedisCluster)


def read_values(client: RedisLike, keys: list[bytes]) -> list[bytes | None]:
    """GET many keys in one round trip per node; a cross-slot MGET fails on a cluster."""
    if not keys:
        return []
    if is_cluster(client):
        return client.mget_nonatomic(keys)
    return client.mget(keys)


def exists_each(client: RedisLike, keys: list[bytes], batch: int = 2000) -> list[bool]:
    """Which of ``keys`` exist, pipelined (EXISTS with many keys only returns a count)."""
    out: list[bool] = []
    for start in range(0, len(keys), batch):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + batch]:
            pipe.exists(key)
        out += [bool(n) for n in pipe.execute()]
    return out


def glob_escape(prefix: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix)
