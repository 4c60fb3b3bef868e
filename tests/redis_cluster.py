"""A throwaway Redis Cluster on localhost: 3 primaries, no replicas, in a temp dir.

``local_cluster()`` starts three ``redis-server`` processes with cluster mode on free
ports (client and cluster-bus ports both picked by the OS), joins them with
``redis-cli --cluster create``, waits (bounded polling, no timing assertions) until
``CLUSTER INFO`` reports ``cluster_state:ok`` with all 16384 slots and 3 known nodes on
every node, and always kills the processes and removes the directory afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

PRIMARIES = 3
POLL_INTERVAL = 0.05
POLL_ATTEMPTS = 400  # at most ~20 s per wait; a healthy cluster is ready in well under a second
COMMAND_TIMEOUT = 60


class ClusterStartError(RuntimeError):
    pass


def missing_binaries() -> str | None:
    """Why the cluster cannot be started here, or None."""
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        return f"Redis Cluster tests need {' and '.join(missing)} (Redis 7) on PATH"
    return None


def _free_ports(count: int) -> list[int]:
    """Ports the OS hands out, all held at once so they are distinct."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    raw = client.execute_command("CLUSTER INFO")
    if isinstance(raw, dict):  # redis-py may already parse it
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass
class LocalCluster:
    ports: list[int]
    directory: Path
    processes: list[subprocess.Popen]

    @property
    def url(self) -> str:
        """REDIS_URL as the tool takes it: any one node, plus ``?cluster=true``."""
        return f"redis://127.0.0.1:{self.ports[0]}/?cluster=true"

    def node(self, port: int) -> redis.Redis:
        """A plain (non-cluster) client on one node: it sees only that node's keys."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for port in self.ports:
            log = self.directory / f"redis-{port}.log"
            if log.exists():
                out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def wait_for(self, what: str, check: Callable[[], bool]) -> None:
        """Bounded polling: raise with the servers' logs if ``check`` never holds."""
        for _ in range(POLL_ATTEMPTS):
            dead = [p.args[2] for p in self.processes if p.poll() is not None]
            if dead:
                raise ClusterStartError(f"redis-server on port(s) {dead} exited\n{self.log_tail()}")
            with contextlib.suppress(redis.RedisError, OSError):
                if check():
                    return
            time.sleep(POLL_INTERVAL)
        raise ClusterStartError(f"Redis Cluster: timed out waiting for {what}\n{self.log_tail()}")

    def all_nodes(self, predicate: Callable[[redis.Redis], bool]) -> Callable[[], bool]:
        def check() -> bool:
            for port in self.ports:
                client = self.node(port)
                try:
                    if not predicate(client):
                        return False
                finally:
                    client.close()
            return True

        return check


def _cluster_ok(client: redis.Redis) -> bool:
    info = _cluster_info(client)
    return (info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384"
            and info.get("cluster_known_nodes") == str(PRIMARIES))


def _stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    directory = Path(tempfile.mkdtemp(prefix="tm-redis-cluster-"))
    processes: list[subprocess.Popen] = []
    try:
        ports = _free_ports(2 * PRIMARIES)
        client_ports, bus_ports = ports[:PRIMARIES], ports[PRIMARIES:]
        for port, bus in zip(client_ports, bus_ports, strict=True):
            processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{port}.conf", "--cluster-port", str(bus),
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", str(directory), "--logfile", f"redis-{port}.log"],
                cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        cluster = LocalCluster(client_ports, directory, processes)
        cluster.wait_for("every node to answer PING", cluster.all_nodes(lambda c: bool(c.ping())))
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in client_ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )
        if created.returncode != 0:
            raise ClusterStartError(f"redis-cli --cluster create failed ({created.returncode}):\n"
                                    f"{created.stdout}\n{created.stderr}\n{cluster.log_tail()}")
        cluster.wait_for("cluster_state:ok on every node", cluster.all_nodes(_cluster_ok))
        yield cluster
    finally:
        _stop(processes)
        shutil.rmtree(directory, ignore_errors=True)
