"""Room in Redis for a run's session index, checked before the plan writes any of it.

The index lives in the session Redis until the run ends: about 175 bytes of memory per logged-in session
(measured with 100-character user agents). A Redis that reaches its ``maxmemory`` under an eviction policy
evicts keys to make room, and Express sessions are keys with a TTL like the index's own slices: users would
be logged out of Express, and a chunk whose slice went would refuse to run. So a plan first asks each node
for its memory and refuses, naming the figures, when the index would not fit.
"""

from __future__ import annotations

import redis.exceptions

from tokenmigration.engine.errors import IndexWontFit
from tokenmigration.engine.session_index import node_client, scan_nodes
from tokenmigration.redis_client import RedisLike

# Per key in the node, whatever it holds: above the 175 B measured per logged-in session (longer user agents),
# and keys that are not logged-in sessions add nothing, so the estimate errs towards refusing.
INDEX_BYTES_PER_KEY = 200
_MB = 1024 * 1024


def check_index_room(client: RedisLike, bytes_per_key: int = INDEX_BYTES_PER_KEY) -> None:
    """Raise IndexWontFit when a node's keys times ``bytes_per_key`` exceed what its maxmemory leaves."""
    for name in scan_nodes(client):
        node = node_client(client, name)
        try:
            memory = node.info("memory")
        except redis.exceptions.ResponseError as error:
            if "unknown command" in str(error).lower():
                continue  # the demo's embedded stand-in: no INFO, no maxmemory, nothing to evict
            raise
        limit = int(memory.get("maxmemory") or 0)
        if not limit:  # no maxmemory: Redis does not evict (the host's memory is the limit)
            continue
        used = int(memory.get("used_memory") or 0)
        keys = int(node.dbsize())
        need = keys * bytes_per_key
        if used + need > limit:
            where = "Redis" if name == "single" else f"Redis node {name}"
            raise IndexWontFit(
                f"{where} has {max(0, limit - used) / _MB:,.0f} MB left under its maxmemory of {limit / _MB:,.0f} MB "
                f"(policy {memory.get('maxmemory_policy', 'unknown')}) and this run's session index needs about "
                f"{need / _MB:,.0f} MB ({bytes_per_key} bytes for each of its {keys:,} keys): filling it would make "
                "Redis evict keys, Express sessions among them, logging users out. Give Redis room (a larger "
                "maxmemory or node) and start again, or set INDEX_MEMORY_CHECK=false if you know the index fits"
            )
