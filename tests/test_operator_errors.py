"""What an operator sees when something is wrong: one line naming the cause, exit 2, nothing lost.

Each test is named after the mistake it protects against (issue 11's numbered findings); the commands run as
a user runs them, in their own process, against the test PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from helpers import add_users, express, put_session
from tokenmigration.db.schema import tokens

CLI = [sys.executable, "-m", "tokenmigration.cli.main"]
ONE_LINE_PREFIX = "tokenmigration"


def run(args, env_extra, timeout=120, drop=("DATABASE_URL", "REDIS_URL", "EXPRESS_SESSION_SECRETS",
                                            "LARAVEL_APP_KEY", "LARAVEL_SESSION_COOKIE")):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    return subprocess.run([*CLI, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line(done, *needles: str) -> None:
    """Exit 2, no traceback, one line on stderr that says what is wrong."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def token_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tokens)).scalar_one()


@pytest.fixture
def env(pg_engine, redis_url):
    return {"DATABASE_URL": pg_engine.url.render_as_string(hide_password=False), "REDIS_URL": redis_url}


# --- 1, 2, 8: local serve's start-up -------------------------------------------------------------------


def test_local_serve_takes_the_laravel_session_cookie_from_the_environment(pg_engine, redis_url, monkeypatch):
    from tokenmigration.local.twin import LocalTwin

    monkeypatch.setenv("LARAVEL_SESSION_COOKIE", "myapp_session")
    with LocalTwin(database_url=pg_engine.url.render_as_string(hide_password=False), redis_url=redis_url,
                   log_level="ERROR") as twin:
        assert twin.deployment.env["LARAVEL_SESSION_COOKIE"] == "myapp_session"


@pytest.mark.parametrize("key", ["garbage", "base64:not*base64", "base64:" + "QUJD" * 4])
@pytest.mark.parametrize("command", [["stats"], ["local", "serve", "--port", "0"], ["migrate", "--dry-run"]])
def test_a_malformed_app_key_stops_every_command_at_start_up(env, key, command):
    done = run(command, {**env, "LARAVEL_APP_KEY": key, "EXPRESS_SESSION_SECRETS": "s"})
    assert_one_line(done, "LARAVEL_APP_KEY")
    assert key not in done.stderr  # never echo a key, even a wrong one


@pytest.mark.parametrize("secrets", [None, "", ",", " , "])
def test_local_serve_refuses_to_start_without_the_express_secret(env, secrets):
    extra = {} if secrets is None else {"EXPRESS_SESSION_SECRETS": secrets}
    done = run(["local", "serve", "--port", "0"], {**env, **extra})
    assert_one_line(done, "EXPRESS_SESSION_SECRETS", "401")


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_local_serve_refuses_a_port_out_of_range(env, port):
    done = run(["local", "serve", "--port", port], {**env, "EXPRESS_SESSION_SECRETS": "s"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--port" in done.stderr and "tokenmigration local serve: error" in done.stderr


# --- 3: --errors-file ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing-dir", "directory"])
def test_an_unwritable_errors_file_fails_before_any_user_is_migrated(env, pg_engine, tmp_path, where):
    add_users(pg_engine, [1, 2])
    path = tmp_path / "no" / "such" / "e.jsonl" if where == "missing-dir" else tmp_path
    done = run(["migrate", "--yes", "--errors-file", str(path)], env)
    assert_one_line(done, "--errors-file", str(path))
    assert token_count(pg_engine) == 0


# --- 5, 13: URLs and drivers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "needle"), [
    ("0?cluster=true", "cluster"),  # a single node asked for cluster mode
    ("3?cluster=true", "database 0"),  # a cluster has only DB 0
    ("99", "database number"),  # beyond the server's `databases`
])
def test_a_bad_redis_url_is_one_line_naming_redis_url(env, pg_engine, suffix, needle):
    add_users(pg_engine, [1])
    base = env["REDIS_URL"].rsplit("/", 1)[0]
    done = run(["migrate", "--dry-run"], {**env, "REDIS_URL": f"{base}/{suffix}"})
    assert_one_line(done, "REDIS_URL", needle)


def test_a_database_driver_that_is_not_installed_is_one_line(env):
    done = run(["stats"], {**env, "DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1/x"})
    assert_one_line(done, "DATABASE_URL", "psycopg2")


def test_a_missing_database_is_named_not_shown_as_a_driver_dict(env):
    url = env["DATABASE_URL"].rsplit("/", 1)[0] + "/tm_no_such_database"
    done = run(["stats"], {**env, "DATABASE_URL": url})
    assert_one_line(done, "does not exist", "tm_no_such_database")
    assert "{" not in done.stderr


# --- 6: each command asks only for what it uses --------------------------------------------------------


def test_stats_rollback_and_cleanup_need_no_redis_url(env, pg_engine, redis_client):
    add_users(pg_engine, [1, 2, 3])
    put_session(redis_client, "s1", express(1))
    assert run(["migrate", "--yes", "--workers", "2"], env).returncode == 0
    no_redis = {"DATABASE_URL": env["DATABASE_URL"]}
    for command in (["stats"], ["cleanup", "--dry-run"], ["rollback", "--yes", "--workers", "2"]):
        done = run(command, no_redis)
        assert done.returncode == 0, (command, done.stderr)
    assert token_count(pg_engine) == 0
    assert_one_line(run(["migrate", "--yes"], no_redis), "REDIS_URL")


# --- 13: usage ---------------------------------------------------------------------------------------------


def test_an_unknown_option_shows_the_usage_of_its_command():
    done = run(["migrate", "--bogus"], {})
    assert done.returncode == 2
    assert "usage: tokenmigration migrate" in done.stderr and "--bogus" in done.stderr
    nested = run(["api", "start", "--bogus"], {})
    assert "usage: tokenmigration api start" in nested.stderr


@pytest.mark.parametrize("command", ["stats", "cleanup"])
def test_every_option_has_help_text(command):
    from tokenmigration.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert all(action.help for action in sub._actions), [a.dest for a in sub._actions if not a.help]


# --- 4, 7: a failed run says why, on every surface; Ctrl-C while watching says the run goes on -----------------


KEY, SECRET, REGION = "AKIAOPSERRORSTEST001", "ops-errors-test-secret-access-key", "us-east-1"


@pytest.fixture
def unreachable_redis_server(pg_engine, monkeypatch):
    """The twin against a Redis nobody listens on: every run's plan fails (after the ASL's retries, not slept)."""
    from types import SimpleNamespace

    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    from tokenmigration.local.server import Credentials, start_in_background
    from tokenmigration.local.twin import LocalTwin

    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=lambda _seconds: None))
    twin = LocalTwin(database_url=pg_engine.url.render_as_string(hide_password=False),
                     redis_url="redis://127.0.0.1:1/0", log_level="CRITICAL",
                     extra_env={"FLAGS_MAX_AGE_SECONDS": "0", "POWERTOOLS_METRICS_DISABLED": "true"})
    running = start_in_background(twin, Credentials(KEY, SECRET, REGION))
    try:
        yield running
    finally:
        running.stop()


def api_cli(server, *argv: str):
    import io

    from botocore.credentials import Credentials as BotoCredentials

    from tokenmigration.cli.api import ApiClient, cmd_api
    from tokenmigration.cli.main import parse_args

    out = io.StringIO()
    client = ApiClient(server.url, credentials=BotoCredentials(KEY, SECRET), region=REGION)
    code = cmd_api(parse_args(["api", "--endpoint", server.url, *argv]), client=client, out=out)
    return code, out.getvalue()


def test_a_failed_run_says_why_in_progress_watch_and_errors(unreachable_redis_server, pg_engine, capsys):
    add_users(pg_engine, [1, 2])
    code, _ = api_cli(unreachable_redis_server, "start", "--yes", "--watch", "--interval", "0.05")
    assert code == 1
    watched = capsys.readouterr().err
    assert "ended FAILED: TransientRedisError" in watched and "127.0.0.1:1" in watched
    assert "redrive-execution" in watched and "api errors --id" in watched

    code, text = api_cli(unreachable_redis_server, "progress", "--json")
    error = json.loads(text)["progress"]["error"]
    assert error["type"] == "TransientRedisError" and "Connection refused" in error["message"]
    code, text = api_cli(unreachable_redis_server, "progress")
    assert "error" in text and "TransientRedisError" in text

    code, text = api_cli(unreachable_redis_server, "errors")
    assert code == 0 and "no problems" not in text
    assert "run_failed" in text and "TransientRedisError" in text
    code, text = api_cli(unreachable_redis_server, "errors", "--json", "--limit", "1")
    page = json.loads(text)
    assert [e["code"] for e in page["errors"]] == ["run_failed"] and page["errors"][0]["user_id"] is None


def test_local_serve_warns_at_start_up_when_redis_is_unreachable(unreachable_redis_server):
    from tokenmigration.cli.local import unreachable

    warnings = unreachable(unreachable_redis_server.twin)
    assert len(warnings) == 1 and "REDIS_URL" in warnings[0]


def test_ctrl_c_while_watching_says_the_run_goes_on(unreachable_redis_server, monkeypatch, capsys):
    from tokenmigration.cli import api

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "watch", interrupted)
    code, _ = api_cli(unreachable_redis_server, "progress", "--id", "migration-x", "--watch")
    err = capsys.readouterr().err
    assert code == 130
    assert "goes on" in err and "api progress --id migration-x --watch" in err
    assert "run again" not in err


# --- 9, 10, 11: the local run's processes, a vanished index, transient faults ---------------------------------

BOUND = 60.0  # seconds: a bound on polling loops, never a timing assertion


def spawn_cli(args, env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(env_extra)
    return subprocess.Popen([*CLI, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return {int(p) for p in fh.read().split()}
    except FileNotFoundError:
        return set()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def poll(condition, what: str):
    import time

    deadline = time.monotonic() + BOUND
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def lock_waiters(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).scalar_one()


@pytest.fixture
def users_held(pg_engine):
    """30 users whose rows the application holds FOR UPDATE: a run's chunks wait on them until released."""
    add_users(pg_engine, list(range(1, 31)))
    app = pg_engine.connect()
    app.exec_driver_sql("SELECT id FROM users FOR UPDATE")
    try:
        yield app
    finally:
        app.rollback()
        app.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_migrate_with_sigkill_ends_its_workers(env, pg_engine, users_held):
    import signal

    proc = spawn_cli(["migrate", "--yes", "--workers", "2", "--chunk-size", "5"],
                     {**env, "MIGRATION_LOCK_TIMEOUT_MS": "60000"})
    try:
        workers = poll(lambda: children(proc.pid) if len(children(proc.pid)) >= 2 else None, "two workers")
        poll(lambda: lock_waiters(pg_engine) >= 2, "both workers inside a chunk")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=BOUND)
        poll(lambda: not any(alive(pid) for pid in workers), "the workers to end with their parent")
    finally:
        proc.kill()
        proc.wait()
    users_held.rollback()
    assert token_count(pg_engine) == 0  # the killed chunks never committed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_migrate_like_ctrl_c_running_chunks_commit_no_new_one_starts(env, pg_engine, users_held):
    import signal

    proc = spawn_cli(["migrate", "--yes", "--workers", "2", "--chunk-size", "5"],
                     {**env, "MIGRATION_LOCK_TIMEOUT_MS": "60000"})
    try:
        workers = poll(lambda: children(proc.pid) if len(children(proc.pid)) >= 2 else None, "two workers")
        poll(lambda: lock_waiters(pg_engine) >= 2, "both workers inside a chunk")
        proc.send_signal(signal.SIGTERM)
        said = ""
        while "stopping: waiting for" not in said:
            line = proc.stderr.readline()
            assert line, said
            said += line
        users_held.rollback()  # the running chunks can now finish
        _, err = proc.communicate(timeout=BOUND)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, said + err
    assert "interrupted; every finished chunk is committed" in err and "Traceback" not in said + err
    assert not any(alive(pid) for pid in workers)
    committed = token_count(pg_engine)
    assert 0 < committed < 30 and committed % 5 == 0  # whole chunks only, and not every chunk


def test_a_session_index_lost_mid_run_is_one_line_exit_2(env, pg_engine, redis_client, users_held):
    for uid in (1, 2, 6, 7):
        put_session(redis_client, f"s{uid}", express(uid))
    proc = spawn_cli(["migrate", "--yes", "--workers", "1", "--chunk-size", "15"],
                     {**env, "MIGRATION_LOCK_TIMEOUT_MS": "60000"})
    try:
        poll(lambda: lock_waiters(pg_engine) >= 1, "the first chunk inside its transaction")
        for key in redis_client.scan_iter(match="tokenmigration:index:*"):  # what a failover can do
            redis_client.delete(key)
        users_held.rollback()
        out, err = proc.communicate(timeout=BOUND)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "_RemoteTraceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert "session index" in last and "start a new run" in last
    assert "committed before it stopped" in out and token_count(pg_engine) == 15  # the first chunk's users


KILL_ONCE = [
    "CREATE SEQUENCE ops_fault_once",
    # nextval is not rolled back with the dying transaction: the fault happens exactly once.
    """CREATE FUNCTION ops_kill_once() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF nextval('ops_fault_once') = 1 THEN
           PERFORM pg_terminate_backend(pg_backend_pid());
         END IF;
         RETURN NULL;
       END $$""",
    "CREATE TRIGGER ops_kill_once AFTER INSERT ON personal_access_tokens "
    "FOR EACH STATEMENT EXECUTE FUNCTION ops_kill_once()",
]


@pytest.fixture
def backend_killed_once(pg_engine):
    """The first chunk that mints tokens loses its database backend mid-transaction, as a failover or an
    administrator's pg_terminate_backend does; every later one goes through."""
    with pg_engine.begin() as conn:
        for statement in KILL_ONCE:
            conn.exec_driver_sql(statement)
    yield
    with pg_engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS ops_kill_once ON personal_access_tokens")
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS ops_kill_once()")
        conn.exec_driver_sql("DROP SEQUENCE IF EXISTS ops_fault_once")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_terminated_database_backend_is_retried_and_reported(env, pg_engine, redis_client, backend_killed_once,
                                                                workers):
    add_users(pg_engine, list(range(1, 21)))
    for uid in (1, 12):
        put_session(redis_client, f"s{uid}", express(uid))
    done = run(["migrate", "--yes", "--json", "--workers", workers, "--chunk-size", "5"], env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["migrated_users"], summary["sessions_migrated"], summary["failed_users"]) == (20, 2, 0)
    assert sum(summary["retries"].values()) == 1 and next(iter(summary["retries"])).startswith("database: ")
    assert "retry 1 of" in done.stderr
    assert token_count(pg_engine) == 20  # the retried chunk minted once


# --- 12: the twin answers everything with JSON, refusing what API Gateway refuses --------------------------------


def send_raw(server, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None):
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, parts.path + path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders(body)
        answer = conn.getresponse()
        data = answer.read()
        return answer.status, answer.getheader("Content-Type"), json.loads(data) if data else None
    finally:
        conn.close()


REFUSED = [  # method, path, headers, status, message
    ("TRACE", "/auth/migration/progress", {}, 403, "Missing Authentication Token"),
    ("CONNECT", "/auth/migration/progress", {}, 403, "Missing Authentication Token"),
    ("BREW", "/auth/migration/exchange", {}, 403, "Missing Authentication Token"),
    # one header line past Python's own 64 KiB limit
    ("GET", "/auth/migration/progress", {"Cookie": "a=" + "x" * 100_000}, 431, "Request Header Fields Too Large"),
    # past API Gateway's 10,240 bytes of request line and header values
    ("GET", "/auth/migration/progress", {"X-Padding": "x" * 11_000}, 431, "Request Header Fields Too Large"),
    ("GET", "/auth/migration/progress?q=" + "x" * 70_000, {}, 414, "Request-URI Too Long"),
    ("POST", "/auth/migration/exchange", {"Content-Length": "abc"}, 400, "Bad Request"),
    ("POST", "/auth/migration/exchange", {"Content-Length": str(11 * 1024 * 1024)}, 413, "Request Too Long"),
]


def test_the_twin_answers_refused_methods_and_sizes_with_json(unreachable_redis_server):
    for method, path, headers, status, message in REFUSED:
        answer = send_raw(unreachable_redis_server, method, path, headers)
        assert answer == (status, "application/json", {"message": message}), (method, path[:60], answer)


def test_the_twin_reads_a_chunked_body(unreachable_redis_server):
    payload = b'{"grant_type": "password"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    got, content_type, document = send_raw(unreachable_redis_server, "POST", "/auth/migration/exchange",
                                           {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                                           chunked)
    assert (got, content_type) == (400, "application/json")  # the exchange's own answer to a wrong grant type
    assert document["error"] in ("invalid_request", "unsupported_grant_type")


def test_an_unreachable_redis_fails_at_once_not_after_the_retries(env, pg_engine):
    add_users(pg_engine, [1])
    done = run(["migrate", "--yes"], {**env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert_one_line(done, "cannot reach Redis at REDIS_URL")
    assert "retry" not in done.stderr
