"""The command line where people meet it: a real terminal answering the confirmation, `local serve` started,
called and stopped as an operator would, the progress bar on a terminal, the argument types and tables."""

from __future__ import annotations

import io
import os
import pty
import select as select_module
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from helpers import add_users, express, put_session
from tokenmigration.db.schema import tokens, users

CLI = [sys.executable, "-m", "tokenmigration.cli.main"]
DEADLINE = 60  # a bound for a hung child, never a timing assertion


@pytest.fixture
def db_engine(pg_engine):
    """The CLI's production path: PostgreSQL (settings follow db_engine)."""
    return pg_engine


@pytest.fixture
def env(settings, db_engine):
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {**base, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}


def _read_until(fd: int, wanted: bytes) -> bytes:
    seen = b""
    while wanted not in seen:
        ready, _, _ = select_module.select([fd], [], [], DEADLINE)
        assert ready, f"no {wanted!r} from the child; it printed {seen[-500:]!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen


def _on_a_terminal(args: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stdout/stderr, answer its question, return (exit, output)."""
    leader, follower = pty.openpty()
    child = subprocess.Popen([*CLI, *args], env=env, stdin=follower, stdout=follower, stderr=follower,
                             close_fds=True)
    os.close(follower)
    try:
        shown = _read_until(leader, b"[y/N]")
        os.write(leader, answer + b"\n")
        shown += _read_until(leader, b"\x00never")  # the rest, until the child closes the terminal
        return child.wait(timeout=DEADLINE), shown.decode(errors="replace")
    finally:
        os.close(leader)
        if child.poll() is None:
            child.kill()


def _count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_answering_no_at_the_terminal_migrates_nobody(env, pg_engine, redis_client):
    add_users(pg_engine, [1, 2])
    put_session(redis_client, "s1", express(1))
    code, shown = _on_a_terminal(["migrate"], env, b"n")
    assert code == 2 and "aborted" in shown
    assert "Migrate" in shown or "migrate" in shown  # the question named what it would do
    assert _count(pg_engine, users, users.c.migrated_to_sanctum_at.is_not(None)) == 0
    assert _count(pg_engine, tokens) == 0


def test_answering_yes_at_the_terminal_migrates_with_a_progress_bar(env, pg_engine, redis_client):
    add_users(pg_engine, [1, 2])
    put_session(redis_client, "s1", express(1))
    code, shown = _on_a_terminal(["migrate"], env, b"y")
    assert code == 0, shown
    assert "\r" in shown and "[" in shown and "users/s" in shown  # the bar redraws in place on a terminal
    assert _count(pg_engine, users, users.c.migrated_to_sanctum_at.is_not(None)) == 2
    assert _count(pg_engine, tokens) == 2


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--chunk-size", "0", "must be at least 1"), ("--workers", "many", "'many' is not an integer")])
def test_a_count_option_takes_positive_integers_only(env, option, value, message):
    done = subprocess.run([*CLI, "migrate", "--yes", option, value], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=DEADLINE)
    assert done.returncode == 2
    assert f"argument {option}: {message}" in done.stderr and "usage: tokenmigration migrate" in done.stderr


def test_local_serve_answers_signed_requests_and_stops_on_sigterm(env, pg_engine):
    """As an operator runs it: start, read the banner, call a route signed with the announced key, SIGTERM."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    add_users(pg_engine, [1, 2, 3])
    key, secret = "AKIAOPERATOR0000TEST", "operator-secret-key-for-this-test"
    serve_env = {**env, "EXPRESS_SESSION_SECRETS": "express-secret", "AWS_ACCESS_KEY_ID": key,
                 "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1"}
    child = subprocess.Popen([*CLI, "local", "serve", "--port", "0"], env=serve_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        banner = _read_until(child.stdout.fileno(), b"TOKENMIGRATION_API_URL=")
        while not banner.split(b"TOKENMIGRATION_API_URL=", 1)[1].endswith(b"\n"):
            banner += _read_until(child.stdout.fileno(), b"\n")
        banner = banner.decode()
        url = banner.split("TOKENMIGRATION_API_URL=", 1)[1].split()[0]
        assert f"signed with access key {key}" in banner and "/exchange   (public)" in banner
        request = AWSRequest(method="GET", url=f"{url}/auth/migration/stats")
        SigV4Auth(Credentials(key, secret), "execute-api", "us-east-1").add_auth(request)
        with urllib.request.urlopen(urllib.request.Request(request.url, headers=dict(request.headers)),
                                    timeout=DEADLINE) as answer:
            assert answer.status == 200 and b'"total_users":3' in answer.read()
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=DEADLINE)
        stderr = child.stderr.read().decode()
    finally:
        if child.poll() is None:
            child.kill()
    assert code == 0 and "stopping" in stderr and "Traceback" not in stderr


# --- the pieces the commands print with -------------------------------------------------------------------


@dataclass
class Summary:
    kind: str = "migration"
    phase: str = "migrating"
    total_users: int | None = 10
    processed_users: int = 5
    failed_users: int = 0
    rate: float = 100.0
    eta_seconds: float | None = 0.05
    keys_seen: int = 0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_redraws_in_place_on_a_terminal_and_notes_go_above_it():
    from tokenmigration.cli.progress import ProgressBar

    screen = Terminal()
    bar = ProgressBar(screen, width=10)
    bar(Summary())
    bar.note("retrying chunk 3 after a dropped connection")
    bar(Summary(processed_users=10, failed_users=1))
    bar.close()
    text = screen.getvalue()
    assert text.startswith("\r") and "[#####-----]  50.0%" in text and "\x1b[K" in text
    assert "\r\x1b[Ktokenmigration: retrying chunk 3 after a dropped connection\n" in text
    assert "[##########] 100.0%" in text and "failed 1" in text and text.endswith("\n")


def test_plain_lines_off_a_terminal_and_nothing_when_quiet():
    from tokenmigration.cli.progress import ProgressBar

    log = io.StringIO()
    ProgressBar(log)(Summary(phase="indexing sessions", keys_seen=1234))
    assert log.getvalue() == "migration: indexing Express sessions, 1,234 keys read\n"
    quiet = io.StringIO()
    ProgressBar(quiet, quiet=True)(Summary())
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(("seconds", "shown"), [(None, "--:--"), (4.25, "4.2 s"), (125, "02:05"),
                                                (3725, "1:02:05")])
def test_durations(seconds, shown):
    from tokenmigration.cli.output import duration

    assert duration(seconds) == shown


def test_tables_align_numbers_right_and_text_left():
    from tokenmigration.cli.output import table

    assert table([]) == ""
    assert table([("migrated", "1,234"), ("failed", "7")], headers=("what", "users")).splitlines() == [
        "what      users", "--------  -----", "migrated  1,234", "failed        7"]
