"""What one contestant of ``make bench`` cost: CPU-seconds per process from /proc, WAL bytes, peak memory.

Wall-clock users/s is noisy on a shared machine; CPU-seconds charged to a process and WAL bytes are not.
The bench gives the database and Redis servers of its own (``PrivateServers``) so that everything those
processes do and log is the contestant's work, not another client's: PostgreSQL's WAL position is
cluster-wide, and a shared redis-server serves everyone.

A process's CPU is read from /proc/<pid>/stat: its own utime+stime plus cutime+cstime, the time of the
children it has reaped. A backend that exits is reaped by the postmaster, so a whole server's CPU is the
root's four fields plus every live descendant's, and a difference of two readings misses nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
_TOTAL_LEN = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+)")
_RELATION = re.compile(r"rel \d+/\d+/(\d+)")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return raw[raw.rindex(")") + 2:].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found.extend(int(c) for c in text.split())
    except OSError:
        pass
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU-seconds of ``root`` and all its descendants, dead (reaped) or alive."""
    fields = _stat(root)
    if fields is None:
        return 0.0
    # After the name: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / TICKS + sum(tree_cpu_seconds(child) for child in _children(root))


def rss_bytes(pid: int) -> int:
    """The process's resident set now, 0 when it is gone."""
    fields = _stat(pid)
    return int(fields[21]) * PAGE if fields is not None else 0  # rss(24) in pages, 21 after the name


def high_water_bytes(pid: int) -> int:
    """The process's own peak resident set so far (VmHWM), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _tree(root: int) -> list[int]:
    pids = [root]
    for child in _children(root):
        pids.extend(_tree(child))
    return pids


class RssSampler:
    """Samples a process tree every ``interval`` seconds on a thread: the peak of its summed RSS, and the
    largest peak (VmHWM) of any one process in it.

    The kernel keeps each process's own high-water mark, so the largest single process is exact for every
    process sampled once after its peak. getrusage's ru_maxrss is not usable here: at exec Linux folds the
    high-water mark of the image being replaced (a copy of the bench itself, hundreds of MiB at 1,000,000
    users) into the child's figure. The sum of a tree's processes at one moment is not kept by the kernel,
    hence the sampling (peaks shorter than the interval may be missed).
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak_sum = 0
        self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            self.peak_sum = max(self.peak_sum, sum(rss_bytes(pid) for pid in pids))
            self.peak_single = max(self.peak_single, *(high_water_bytes(pid) for pid in pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                     check=False).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@dataclass(slots=True)
class PrivateServers:
    """A throwaway PostgreSQL cluster and redis-server, with default settings, for one bench run."""

    workdir: Path
    pg_port: int
    redis_port: int
    pg: subprocess.Popen | None = None
    redis: subprocess.Popen | None = None
    bindir: Path | None = None

    @property
    def pg_url(self) -> str:
        return f"postgresql+pg8000://postgres@127.0.0.1:{self.pg_port}/postgres"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}"

    @property
    def pg_pid(self) -> int:
        assert self.pg is not None
        return self.pg.pid

    @property
    def redis_pid(self) -> int:
        assert self.redis is not None
        return self.redis.pid

    pg_settings: tuple[str, ...] = ()

    @classmethod
    def start(cls, postgres: bool = True, pg_settings: tuple[str, ...] = ()) -> PrivateServers:
        bindir = _postgres_bindir()
        if (postgres and bindir is None) or shutil.which("redis-server") is None:
            raise SystemExit("bench: private servers need PostgreSQL's initdb and redis-server "
                             "(apt-get install postgresql redis-server), or pass --servers shared")
        workdir = Path(tempfile.mkdtemp(prefix="tm-bench-"))
        servers = cls(workdir, free_port(), free_port(), pg_settings=tuple(pg_settings))
        try:
            if postgres:
                servers._start_postgres(bindir)
            servers._start_redis()
        except BaseException:
            servers.stop()
            raise
        return servers

    def _as_postgres(self) -> list[str]:
        # PostgreSQL refuses to run as root.
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def waldump(self, start: str, end: str, out: Path) -> None:
        """pg_waldump's per-record-type totals (counts, record and full-page-image bytes) of start..end."""
        assert self.bindir is not None
        done = subprocess.run([*self._as_postgres(), str(self.bindir / "pg_waldump"), "--stats=record",
                               "-p", str(self.workdir / "pg" / "pg_wal"), "-s", start, "-e", end],
                              capture_output=True, text=True, check=False)
        out.write_text(done.stdout + done.stderr, encoding="utf-8")

    def wal_by_relation(self, start: str, end: str) -> dict[str, tuple[int, int]]:
        """relfilenode -> (records, bytes incl. full-page images) of start..end, from pg_waldump's records;
        records that name no relation (commits, ...) are keyed by their resource manager."""
        assert self.bindir is not None
        dump = subprocess.Popen([*self._as_postgres(), str(self.bindir / "pg_waldump"),
                                 "-p", str(self.workdir / "pg" / "pg_wal"), "-s", start, "-e", end],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        totals: dict[str, list[int]] = {}
        assert dump.stdout is not None
        for line in dump.stdout:
            size = _TOTAL_LEN.search(line)
            if size is None:
                continue
            rel = _RELATION.search(line)
            key = rel.group(1) if rel else "(" + line.split()[1].rstrip(",") + ")"
            entry = totals.setdefault(key, [0, 0])
            entry[0] += 1
            entry[1] += int(size.group(1))
        dump.wait()
        return {k: (v[0], v[1]) for k, v in totals.items()}

    def _start_postgres(self, bindir: Path) -> None:
        self.bindir = bindir
        data = self.workdir / "pg"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
            shutil.chown(data, "postgres")
        subprocess.run([*self._as_postgres(), str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "-A", "trust", "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True)
        # Shipped settings (shared_buffers, max_wal_size, fsync, synchronous_commit), as the machine's own
        # server has them, and like it without autovacuum: a worker starting mid-run would make runs differ.
        self.pg = subprocess.Popen(
            [*self._as_postgres(), str(bindir / "postgres"), "-D", str(data), "-p", str(self.pg_port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
             "-c", "autovacuum=off", *(arg for setting in self.pg_settings for arg in ("-c", setting))],
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "pg.log").open("wb"),
        )
        log = self.workdir / "pg.log"
        if os.geteuid() == 0:
            # runuser forks the server as its child: measure the server itself.
            self.pg = _Child(self.pg, _wait_for_child(self.pg, log))
        _wait_for_postgres(bindir, self.pg_port, self.pg, log)

    def _start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=(self.workdir / "redis.log").open("wb"), stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.redis_port, "redis-server", self.workdir / "redis.log")

    def stop(self) -> None:
        for proc in (self.redis, self.pg):
            if proc is not None and proc.poll() is None:
                proc.terminate()  # postgres: smart shutdown after the bench closed its connections
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


class _Child:
    """runuser's child (the server): signals go to it, waits go through runuser."""

    def __init__(self, wrapper: subprocess.Popen, pid: int) -> None:
        self._wrapper, self.pid = wrapper, pid

    def poll(self):
        return self._wrapper.poll()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 15)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)

    def wait(self, timeout: float | None = None):
        return self._wrapper.wait(timeout=timeout)


def _did_not_start(what: str, log: Path) -> SystemExit:
    """The server's own last words: its log goes with the bench's work directory when the bench exits."""
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    except OSError:
        tail = []
    return SystemExit(f"bench: the private {what} did not start" + (": " + " / ".join(tail) if tail else ""))


def _wait_for_child(wrapper: subprocess.Popen, log: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and wrapper.poll() is None:
        children = _children(wrapper.pid)
        if children:
            return children[0]
        time.sleep(0.01)
    raise _did_not_start("PostgreSQL server", log)


def _wait_for_postgres(bindir: Path, port: int, server, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        ready = subprocess.run([str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
                               check=False)
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise _did_not_start(f"PostgreSQL server (port {port})", log)


def _wait_for_port(port: int, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise _did_not_start(f"{what} (port {port})", log)
