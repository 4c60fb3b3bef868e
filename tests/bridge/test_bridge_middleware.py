"""The bridge middleware's answers to everything but the happy path, in the real Laravel app (Debian's Laravel 8,
PHP's built-in server, PostgreSQL sessions), talking to a scripted stand-in for the route: unreachable, hanging,
5xx, refusals, throttling, switched off. The real route and a real browser are in test_bridge_browser.py.

The stand-in checks every call's SigV4 signature with the twin's verifier, so these calls are also proof that
the signed request reaches the server intact over HTTP."""

from __future__ import annotations

import base64
import http.cookiejar
import http.server
import json
import re
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert

from harness import free_port, laravel_server, require_tools
from helpers import reset_database
from tokenmigration.db.schema import laravel_users, sessions
from tokenmigration.formats.express import cookie_value
from tokenmigration.formats.laravel_session import encode_payload, new_session_ids, session_attributes
from tokenmigration.local.sigv4 import SignatureError, verify

KEY, SECRET, REGION = "AKIABRIDGEMIDDLEWARE", "bridge-middleware-test-secret", "us-east-1"
USER_ID = 7

pytestmark = pytest.mark.postgres


@dataclass
class Route:
    """What the stand-in answers next, and every call it got (the parsed body, or "bad-signature")."""

    status: int = 401
    body: dict = field(default_factory=lambda: {"error": "invalid_grant"})
    headers: dict = field(default_factory=dict)
    hang: threading.Event | None = None
    calls: list = field(default_factory=list)

    def answer(self, status: int, body: dict, **headers: str) -> None:
        self.status, self.body, self.headers = status, body, headers


def _stand_in(route: Route) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            url = f"http://{self.headers['Host']}{self.path}"
            try:
                verify("POST", url, dict(self.headers.items()), raw, access_key=KEY, secret_key=SECRET,
                       region=REGION, account="123456789012", now=datetime.now(UTC))
                route.calls.append(json.loads(raw))
            except SignatureError:
                route.calls.append("bad-signature")
            if route.hang is not None:
                route.hang.wait(30)
                return
            data = json.dumps(route.body).encode()
            self.send_response(route.status)
            for name, value in {"Content-Type": "application/json", **route.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


@dataclass
class App:
    url: str
    route: Route
    engine: Engine
    log_path: object

    def get(self, cookies: dict[str, str] | None = None, jar: http.cookiejar.CookieJar | None = None):
        """GET / with these cookies, no redirects followed; (status, page text, Set-Cookie headers)."""
        opener = urllib.request.build_opener(*([urllib.request.HTTPCookieProcessor(jar)] if jar else []))
        request = urllib.request.Request(self.url + "/")
        if cookies:
            request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))
        with opener.open(request, timeout=60) as answer:
            return answer.status, answer.read().decode(), answer.headers.get_all("Set-Cookie") or []

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def forget(self) -> None:
        """The bridge's memories (off, refused cookies) live in the file cache: a fresh start per test."""
        data = self.log_path.parent.parent / "framework" / "cache" / "data"
        for path in sorted(data.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()


@pytest.fixture(scope="module")
def app(_pg_engine: Engine, tmp_path_factory):
    require_tools()
    engine = _pg_engine
    reset_database(engine)
    with engine.begin() as conn:
        conn.execute(insert(laravel_users).values(id=USER_ID, name="Gus Stub", email="gus@example.test",
                                                  password="x"))
    route = Route()
    stand_in = _stand_in(route)
    workdir = tmp_path_factory.mktemp("bridge-middleware")
    server = laravel_server(workdir, {
        **_env(engine),
        "TOKENMIGRATION_API_URL": f"http://127.0.0.1:{stand_in.server_address[1]}/prod",
        "TOKENMIGRATION_BRIDGE_TIMEOUT": "1",
    }).start()
    try:
        yield App(server.url, route, engine, workdir / "laravel-storage" / "logs" / "laravel.log")
    finally:
        server.stop()
        stand_in.shutdown()
        stand_in.server_close()


@pytest.fixture
def fresh(app: App) -> App:
    app.forget()
    app.route.calls.clear()
    app.route.hang = None
    app.route.answer(401, {"error": "invalid_grant"})
    return app


def a_cookie() -> str:
    return cookie_value(secrets.token_urlsafe(24), "some-express-secret")


def a_session_row(engine: Engine, user_id: int = USER_ID) -> str:
    session_id = new_session_ids(1)[0]
    with engine.begin() as conn:
        conn.execute(insert(sessions).values(
            id=session_id, user_id=user_id, payload=encode_payload(session_attributes(user_id, "t" * 40)),
            last_activity=int(datetime.now(UTC).timestamp())))
    return session_id


def test_no_express_cookie_no_call(fresh):
    status, page, _ = fresh.get()
    assert (status, "not logged in" in page) == (200, True)
    assert fresh.route.calls == []


def test_bridged_request_continues_as_the_user_with_a_laravel_session_cookie(fresh):
    session_id = a_session_row(fresh.engine)
    fresh.route.answer(200, {"user_id": USER_ID, "session_id": session_id, "lifetime_minutes": 120,
                             "auth_mode": "dual"})
    cookie = a_cookie()
    status, page, set_cookies = fresh.get({"connect.sid": cookie})
    assert status == 200 and "logged in as Gus Stub" in page
    assert any(c.startswith("laravel_session=") for c in set_cookies)
    # The call carried the cookie exactly as the browser sent it, and the browser's address.
    assert fresh.route.calls == [{"session_cookie": cookie, "client_ip": "127.0.0.1"}]


def test_logging_out_after_a_bridge_drops_the_express_cookie_too(fresh):
    session_id = a_session_row(fresh.engine)
    fresh.route.answer(200, {"user_id": USER_ID, "session_id": session_id, "lifetime_minutes": 120,
                             "auth_mode": "dual"})
    jar = http.cookiejar.CookieJar()
    cookie = a_cookie()
    jar.set_cookie(http.cookiejar.Cookie(0, "connect.sid", cookie, None, False, "127.0.0.1", False, False, "/",
                                         True, False, None, False, None, None, {}))
    _, page, _ = fresh.get(jar=jar)
    assert "logged in as Gus Stub" in page
    token = re.search(r'name="_token" value="([^"]+)"', page).group(1)
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(urllib.request.Request(fresh.url + "/logout", data=urllib.parse.urlencode(
            {"_token": token}).encode(), method="POST"), timeout=60)
    assert redirect.value.code == 302
    assert "connect.sid" not in {c.name for c in jar}  # expired by the response
    _, page, _ = fresh.get(jar=jar)
    assert "not logged in" in page
    assert len(fresh.route.calls) == 1  # logging out stuck: no second bridge


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_refused_cookie_is_a_guest_and_not_asked_about_again(fresh):
    cookie = a_cookie()
    for _ in range(3):
        status, page, _ = fresh.get({"connect.sid": cookie})
        assert status == 200 and "not logged in" in page
    assert len(fresh.route.calls) == 1
    fresh.get({"connect.sid": a_cookie()})  # another cookie is asked about
    assert len(fresh.route.calls) == 2


def test_throttled_cookie_waits_for_retry_after(fresh):
    fresh.route.answer(429, {"error": "slow_down"}, **{"Retry-After": "30"})
    cookie = a_cookie()
    assert "not logged in" in fresh.get({"connect.sid": cookie})[1]
    assert "not logged in" in fresh.get({"connect.sid": cookie})[1]
    assert len(fresh.route.calls) == 1


def test_bridge_off_stops_all_calls_for_a_while(fresh):
    fresh.route.answer(403, {"error": "bridge_off", "auth_mode": "sanctum", "exchange_enabled": True})
    assert "not logged in" in fresh.get({"connect.sid": a_cookie()})[1]
    assert "not logged in" in fresh.get({"connect.sid": a_cookie()})[1]
    assert len(fresh.route.calls) == 1
    assert "switched off by the service" in fresh.log()


@pytest.mark.parametrize("status, body", [
    (500, {"message": "Internal server error"}),
    (403, {"message": "The security token included in the request is invalid."}),  # API Gateway, not the route
    (409, {"error": "user_locked"}),
    (200, {"user_id": USER_ID, "session_id": "not-a-laravel-id", "auth_mode": "dual"}),
])
def test_server_side_trouble_is_a_guest_request_logged_and_retried(fresh, status, body):
    fresh.route.answer(status, body)
    cookie = a_cookie()
    for _ in range(2):
        page_status, page, _ = fresh.get({"connect.sid": cookie})
        assert page_status == 200 and "not logged in" in page
    assert len(fresh.route.calls) == 2  # nothing remembered against the cookie or the service
    assert "tokenmigration bridge:" in fresh.log()


def test_hanging_route_gives_a_guest_page_after_the_timeout(fresh):
    fresh.route.hang = threading.Event()
    try:
        status, page, _ = fresh.get({"connect.sid": a_cookie()})
    finally:
        fresh.route.hang.set()
    assert status == 200 and "not logged in" in page
    assert "bridge route unavailable" in fresh.log()


def test_unreachable_route_gives_a_guest_page_logged(app, tmp_path):
    closed = free_port()  # nothing listens there
    server = laravel_server(tmp_path, {**_env(app.engine), "TOKENMIGRATION_API_URL": f"http://127.0.0.1:{closed}"})
    server.start()
    try:
        with urllib.request.urlopen(urllib.request.Request(
                server.url + "/", headers={"Cookie": f"connect.sid={a_cookie()}"}), timeout=60) as answer:
            assert answer.status == 200 and "not logged in" in answer.read().decode()
        log = (tmp_path / "laravel-storage" / "logs" / "laravel.log").read_text()
        assert "bridge route unavailable" in log
    finally:
        server.stop()


def _env(engine: Engine) -> dict[str, str]:
    url = engine.url
    return {"APP_KEY": "base64:" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "DB_CONNECTION": "pgsql", "DB_HOST": url.host or "127.0.0.1", "DB_PORT": str(url.port or 5432),
            "DB_DATABASE": url.database, "DB_USERNAME": url.username or "postgres",
            "DB_PASSWORD": url.password or "", "TOKENMIGRATION_API_REGION": REGION,
            "TOKENMIGRATION_AWS_ACCESS_KEY_ID": KEY, "TOKENMIGRATION_AWS_SECRET_ACCESS_KEY": SECRET}
