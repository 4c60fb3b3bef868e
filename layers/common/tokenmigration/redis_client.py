"""Redis clients for the Express session store: a single node, or a Cluster."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster

from tokenmigration.config import ConfigError

RedisLike = redis.Redis | RedisCluster


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def connect(url: str | None) -> RedisLike:
    """Connect from REDIS_URL; ``?cluster=true`` selects Redis Cluster mode.

    ``cluster`` is ours, not redis-py's: it is taken out of the query, and every other
    option (``socket_timeout=...``, ``ssl_cert_reqs=...``) goes on to redis-py in both modes.
    """
    if not url:
        raise ConfigError("REDIS_URL must be set")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [value.strip().lower() for name, value in query if name == "cluster"]
    flag = flags[-1] if flags else "false"
    if flag not in _TRUE + _FALSE:
        # Name the setting, not the URL: it may hold a password.
        raise ConfigError(f"REDIS_URL: cluster must be true or false, got {flag!r}")
    base = urlunsplit(parts._replace(query=urlencode([(n, v) for n, v in query if n != "cluster"])))
    if flag in _TRUE:
        if _database_number(parts.path, query) not in ("", "0"):
            raise ConfigError("REDIS_URL: a Redis Cluster has only database 0; remove the database number "
                              "(/N or ?db=N) from the URL")
        return RedisCluster.from_url(base, decode_responses=False)
    return redis.Redis.from_url(base, decode_responses=False)


def _database_number(path: str, query: list[tuple[str, str]]) -> str:
    given = [value.strip() for name, value in query if name == "db"]
    return given[-1] if given else path.strip("/")


def is_cluster(client: RedisLike) -> bool:
    return isinstance(client, RedisCluster)


def read_values(client: RedisLike, keys: list[bytes]) -> list[bytes | None]:
    """GET many keys in one round trip per node; a cross-slot MGET fails on a cluster."""
    if not keys:
        return []
    if is_cluster(client):
        return client.mget_nonatomic(keys)
    return client.mget(keys)


def glob_escape(prefix: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix)
