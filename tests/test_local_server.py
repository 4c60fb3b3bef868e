"""`tokenmigration local serve` end to end over HTTP on localhost: template.yaml's API in front of the real
handlers, moto's Step Functions running the real ASL, the test PostgreSQL and Redis; requests signed (or not)
as the operator's client signs them."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.credentials import Credentials as BotoCredentials
from sqlalchemy import func, insert, select, text

from helpers import add_users, cleanup_fails_from_user, express, ledgered_token_rows, put_session
from tokenmigration.cli.api import ApiClient, cmd_api
from tokenmigration.cli.main import build_parser, main
from tokenmigration.db.schema import ledger_tokens, tokens
from tokenmigration.demo_data import seed
from tokenmigration.formats.express import cookie_value
from tokenmigration.local.server import Credentials, routes_from_template, start_in_background
from tokenmigration.local.sigv4 import BAD_SIGNATURE, MISSING_TOKEN
from tokenmigration.local.template import load_template
from tokenmigration.local.twin import LocalTwin

KEY, SECRET, REGION = "AKIALOCALTESTKEY0001", "local-test-secret-access-key", "us-east-1"
POLL_LIMIT = 120.0  # seconds: a bound on the polling loops, never a timing assertion

# A handler that counted nothing flushes no metric, and Powertools warns about that (as in tests/aws).
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.fixture
def server(pg_engine, redis_client, redis_url):
    twin = LocalTwin(database_url=pg_engine.url.render_as_string(hide_password=False), redis_url=redis_url,
                     region=REGION, log_level="ERROR",
                     extra_env={"FLAGS_MAX_AGE_SECONDS": "0", "MIGRATION_LOCK_TIMEOUT_MS": "200"})
    running = start_in_background(twin, Credentials(KEY, SECRET, REGION))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server) -> ApiClient:
    return ApiClient(server.url, credentials=BotoCredentials(KEY, SECRET), region=REGION)


def raw(server, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, parts.path + path, body=body or None, headers=headers or {})
        answer = conn.getresponse()
        data = answer.read()
        return answer.status, dict(answer.getheaders()), json.loads(data) if data else None
    finally:
        conn.close()


def wait_for(client: ApiClient, run_id: str) -> list[dict]:
    """Poll /progress until the run is not RUNNING; every progress document seen, in order."""
    seen = []
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        response = client.request("GET", "/progress", query={"migration_id": run_id})
        assert response.status == 200, response.text
        seen.append(response.document["progress"])
        if seen[-1]["status"] != "RUNNING":
            return seen
        assert time.monotonic() < deadline, f"{run_id} still RUNNING: {seen[-1]}"
        time.sleep(0.05)


def run_cli(server, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["api", "--endpoint", server.url, *argv])
    out = io.StringIO()
    code = cmd_api(args, client=ApiClient(server.url, credentials=BotoCredentials(KEY, SECRET), region=REGION),
                   out=out)
    return code, out.getvalue()


# --- routes and SigV4 ---------------------------------------------------------------------------------------


def test_routes_come_from_the_template():
    routes = {(r.method, r.resource): r for r in routes_from_template(load_template())}
    assert len(routes) == 11
    assert routes[("POST", "/auth/migration/bridge")].iam is True
    assert routes[("POST", "/auth/migration/exchange")].iam is False
    assert all(r.iam for key, r in routes.items() if key[1] != "/auth/migration/exchange")
    assert routes[("POST", "/auth/migration/user/{userId}")].match("/auth/migration/user/42") == {"userId": "42"}


def test_unsigned_wrongly_signed_and_stale_requests_get_api_gateways_403(server, monkeypatch):
    status, headers, body = raw(server, "GET", "/auth/migration/stats")
    assert (status, body) == (403, {"message": MISSING_TOKEN})
    assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"

    wrong = ApiClient(server.url, credentials=BotoCredentials(KEY, "not-the-secret"), region=REGION)
    refused = wrong.request("GET", "/stats")
    assert refused.status == 403 and refused.document["message"].startswith(BAD_SIGNATURE)

    stranger = ApiClient(server.url, credentials=BotoCredentials("AKIASOMEONEELSE00001", SECRET), region=REGION)
    refused = stranger.request("GET", "/stats")
    assert refused.status == 403
    assert refused.document == {"message": "The security token included in the request is invalid."}

    other_region = ApiClient(server.url, credentials=BotoCredentials(KEY, SECRET), region="eu-west-1")
    assert other_region.request("GET", "/stats").status == 403

    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: ten_minutes_ago.replace(tzinfo=None))
    stale = ApiClient(server.url, credentials=BotoCredentials(KEY, SECRET), region=REGION).request("GET", "/stats")
    monkeypatch.undo()
    assert stale.status == 403 and stale.document["message"].startswith("Signature expired: ")
    assert "is now earlier than" in stale.document["message"]


def test_a_signed_request_reaches_the_handler_with_the_caller_identity(server, client):
    seen = []
    invoke = server.twin.invoke

    def spy(name, event):
        seen.append((name, event))
        return invoke(name, event)

    server.twin.invoke = spy
    response = client.request("GET", "/stats")
    assert response.status == 200, response.text
    assert response.document["success"] is True
    assert response.document["feature_flags"] == {"auth_mode": "dual", "sanctum_only": False,
                                                  "migration_in_progress": False, "rollback_available": False}
    name, event = seen[-1]
    assert name == "ApiStatsFunction"
    assert (event["resource"], event["path"], event["httpMethod"]) == ("/auth/migration/stats",
                                                                       "/auth/migration/stats", "GET")
    assert event["requestContext"]["path"] == "/dev/auth/migration/stats"
    identity = event["requestContext"]["identity"]
    assert identity["accessKey"] == KEY and identity["sourceIp"] == "127.0.0.1"
    assert identity["userArn"] == "arn:aws:iam::123456789012:user/local"
    # A signed query string and a path parameter survive the trip.
    assert client.request("GET", "/progress", query={"migration_id": "no such run"}).status in (400, 404)
    assert client.request("POST", "/user/not-a-number").status == 400
    assert seen[-1][1]["pathParameters"] == {"userId": "not-a-number"}
    # Unknown paths and methods: what API Gateway says, signed or not.
    assert raw(server, "GET", "/auth/migration/nowhere")[0] == 403
    assert client.request("DELETE", "/stats").status == 403


def test_the_exchange_needs_no_signature(server, pg_engine, redis_client):
    status, _, body = raw(server, "POST", "/auth/migration/exchange", b"{}", {"Content-Type": "application/json"})
    assert (status, body) == (400, {"error": "invalid_request"})
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": "s:forged.sig",
             "subject_token_type": "urn:tokenmigration:express-session"}
    status, _, body = raw(server, "POST", "/auth/migration/exchange", json.dumps(grant).encode(),
                          {"Content-Type": "application/json"})
    assert (status, body) == (401, {"error": "invalid_grant"})

    add_users(pg_engine, [7])
    put_session(redis_client, "sid-7", express(7))
    grant["subject_token"] = cookie_value("sid-7", server.twin.express_secrets[0])
    status, headers, body = raw(server, "POST", "/auth/migration/exchange", json.dumps(grant).encode(),
                                {"Content-Type": "application/json"})
    assert status == 200, body
    assert body["token_type"] == "Bearer" and "|" in body["access_token"]
    assert "laravel_session=" in headers.get("Set-Cookie", "")


def test_the_bridge_answers_signed_requests_only(server, client, pg_engine, redis_client, capsys):
    add_users(pg_engine, [7])
    put_session(redis_client, "sid-7", express(7))
    cookie = cookie_value("sid-7", server.twin.express_secrets[0])
    body = json.dumps({"session_cookie": cookie, "client_ip": "203.0.113.5"}).encode()
    status, _, refused = raw(server, "POST", "/auth/migration/bridge", body,
                                   {"Content-Type": "application/json"})
    assert (status, refused) == (403, {"message": MISSING_TOKEN})
    wrong = ApiClient(server.url, credentials=BotoCredentials(KEY, "not-the-secret"), region=REGION)
    assert wrong.bridge(cookie).status == 403

    answer = client.bridge(cookie, "203.0.113.5")
    assert answer.status == 200, answer.text
    assert answer.document["user_id"] == 7 and answer.document["auth_mode"] == "dual"
    assert answer.document["session_cookie_name"] == "laravel_session" and len(answer.document["session_id"]) == 40
    assert client.bridge(cookie).document["session_id"] == answer.document["session_id"]
    assert client.bridge(cookie_value("sid-7", "forged")).document == {"error": "invalid_grant"}

    # The operator's CLI: `tokenmigration api bridge --cookie ... --json`.
    args = build_parser().parse_args(["api", "--endpoint", server.url, "bridge", "--cookie", cookie, "--json"])
    out = io.StringIO()
    assert cmd_api(args, client=client, out=out) == 0
    assert json.loads(out.getvalue())["session_id"] == answer.document["session_id"]


# --- runs through the state machine ------------------------------------------------------------------------


def test_a_full_migration_through_the_signed_client_then_rollback(server, client, pg_engine, redis_client):
    report = seed(pg_engine, redis_client, 240)
    holders = set(report.users_with_tokens)
    expected_sessions = sum(report.sessions_by_user.values())  # skipped users keep their sessions too
    carried_only = sum(1 for uid in holders if report.sessions_by_user.get(uid))

    code, text = run_cli(server, "start", "--yes", "--chunk-size", "20", "--max-concurrency", "3", "--json")
    assert code == 0, text
    started = json.loads(text)
    run_id = started["migration_id"]
    assert started["execution_arn"].endswith(":" + run_id)

    seen = wait_for(client, run_id)
    processed = [p["processed_users"] for p in seen]
    assert processed == sorted(processed), f"progress went backwards: {processed}"
    run = seen[-1]
    assert run["status"] == "SUCCEEDED", run
    assert (run["total_users"], run["processed_users"]) == (240, 240)
    assert (run["migrated_users"], run["skipped_users"], run["failed_migrations"]) == (240 - len(holders),
                                                                                        len(holders), 0)
    assert run["sessions_migrated"] == expected_sessions
    assert (run["current_batch"], run["total_batches"], run["percentage"]) == (12, 12, 100.0)

    # The client's --json output for the same run is the API's document.
    code, text = run_cli(server, "progress", "--id", run_id, "--json")
    assert code == 0
    document = json.loads(text)
    assert document["progress"] == run
    assert document["is_in_progress"] is False and document["can_rollback"] is True
    code, text = run_cli(server, "progress", "--id", run_id)
    assert code == 0 and run_id in text and "SUCCEEDED" in text

    stats = client.request("GET", "/stats").document
    assert stats["stats"]["migrated_users"] == 240 - len(holders)
    assert stats["feature_flags"]["rollback_available"] is True
    with pg_engine.connect() as conn:
        assert len(ledgered_token_rows(conn)) == 240 - len(holders)

    # Roll back through the client, watching the rollback run to its end.
    code, text = run_cli(server, "rollback", "--yes", "--watch", "--json", "--interval", "0.05")
    assert code == 0, text
    rolled = json.loads(text)["progress"]
    assert rolled["kind"] == "rollback" and rolled["status"] == "SUCCEEDED"
    assert rolled["total_users"] == rolled["processed_users"] == 240 - len(holders) + carried_only
    stats = client.request("GET", "/stats").document
    assert stats["stats"]["migrated_users"] == 0
    assert stats["feature_flags"] == {"auth_mode": "dual", "sanctum_only": False, "migration_in_progress": False,
                                      "rollback_available": False}
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tokens)).scalar_one() == len(holders)  # the app's own


def test_api_cleanup_calls_again_until_the_walk_is_complete(server, pg_engine, monkeypatch, capsys):
    """Each /cleanup call stops at API Gateway's time limit; `tokenmigration api cleanup` goes on with
    after_user_id until the answer says complete, and reports the sum."""
    import tokenmigration.api.routes.cleanup as route
    import tokenmigration.engine.cleanup as cleanup_module

    add_users(pg_engine, [1, 2, 3, 4, 5])
    with pg_engine.begin() as conn:  # five ledger rows whose tokens the app has deleted since
        conn.execute(insert(ledger_tokens), [{"user_id": uid, "token_id": 1000 + uid, "run_id": "r",
                                              "created_at": datetime(2026, 1, 1)} for uid in range(1, 6)])
    monkeypatch.setattr(route, "TIME_BUDGET_SECONDS", 0.0)
    monkeypatch.setattr(cleanup_module, "PAGE_USERS", 2)

    code, text = run_cli(server, "cleanup", "--dry-run", "--json")
    assert code == 0, text
    dry = json.loads(text)
    assert (dry["dry_run"], dry["complete"], dry["cleaned_items"], dry["details"]["ledger_rows"]) == (True, True, 5, 5)
    assert "in 3 calls" in dry["message"]
    real_page = cleanup_fails_from_user(monkeypatch, 3)
    code, text = run_cli(server, "cleanup")
    assert code != 0
    assert "cleanup stopped after 1 call(s) that removed 2 items, up to user 2; run it again to go on" in \
        capsys.readouterr().err
    monkeypatch.setattr(cleanup_module, "_clean_page", real_page)
    code, text = run_cli(server, "cleanup")
    assert code == 0 and "3" in text, text
    with pg_engine.connect() as conn:
        assert ledgered_token_rows(conn) == []


def test_api_stats_says_when_its_figures_are_estimates(server, pg_engine, monkeypatch):
    import tokenmigration.engine.reporting as reporting

    add_users(pg_engine, [1, 2, 3])
    with pg_engine.begin() as conn:
        conn.execute(text("ANALYZE users"))
    code, text_ = run_cli(server, "stats")
    assert code == 0 and "exact" in text_ and "estimates" not in text_, text_
    monkeypatch.setattr(reporting, "EXACT_COUNT_MAX_USERS", 2)  # as if the table held 100 million users
    code, text_ = run_cli(server, "stats")
    assert code == 0, text_
    assert "estimates: the users table is too large to count" in text_ and "`tokenmigration stats`" in text_


def test_eight_simultaneous_starts_give_one_202(server, pg_engine, redis_client):
    add_users(pg_engine, list(range(1, 31)))
    barrier = threading.Barrier(8)
    answers = []
    # The run must still hold the lock when the last start is answered: its first step waits for that.
    all_answered = threading.Event()
    invoke = server.twin.invoke

    def held(name, event):
        if name == "PlanFunction":
            all_answered.wait(POLL_LIMIT)
        return invoke(name, event)

    server.twin.invoke = held

    def start() -> None:
        own = ApiClient(server.url, credentials=BotoCredentials(KEY, SECRET), region=REGION)
        barrier.wait()
        answers.append(own.request("POST", "/start", {"confirm": True, "chunk_size": 10}))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    all_answered.set()
    statuses = sorted(a.status for a in answers)
    assert statuses == [202] + [409] * 7, [a.text for a in answers]
    winner = next(a.document for a in answers if a.status == 202)
    assert all(a.document["migration_id"] == winner["migration_id"] for a in answers if a.status == 409)
    client = ApiClient(server.url, credentials=BotoCredentials(KEY, SECRET), region=REGION)
    assert wait_for(client, winner["migration_id"])[-1]["status"] == "SUCCEEDED"


def test_the_client_refuses_and_reports(server, client):
    code, _ = run_cli(server, "rollback", "--yes")
    assert code == 1  # no migration yet: "Rollback is not available"
    code, text = run_cli(server, "errors", "--json")
    assert code == 0 and json.loads(text)["errors"] == []
    code, text = run_cli(server, "migrate-user", "999999", "--json")
    assert code == 1 and json.loads(text)["success"] is False
    code, text = run_cli(server, "stats")
    assert code == 0 and "auth_mode" in text


def test_the_cli_says_so_when_the_port_is_taken(capsys, monkeypatch):
    monkeypatch.setenv("EXPRESS_SESSION_SECRETS", "local-test-express-secret")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["local", "serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


def test_the_client_needs_an_endpoint(monkeypatch, capsys):
    monkeypatch.delenv("TOKENMIGRATION_API_URL", raising=False)
    assert main(["api", "stats"]) == 2
    assert "TOKENMIGRATION_API_URL" in capsys.readouterr().err
