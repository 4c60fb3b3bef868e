"""Cutover in a real browser: people log in to a real Express app (express-session + connect-redis + passport)
through its form, the migration runs through the local twin (signed API calls, the real state machines), then
the same origin is served by a minimal real Laravel 8 app (Debian's php-laravel-framework, PHP's built-in
server) with integrations/laravel's bridge installed, and each browser reloads.

Every case asserts what the page says (logged in as whom), the browser's cookie jar (the Laravel session cookie
names a row of that user, or a guest session) and saves a PNG under test-artifacts/browser/.

The cases share one cutover, so they run in this file's order: a later one (switching the exchange off, the
rollback) builds on the state the earlier ones leave, as an operator's day does.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from botocore.credentials import Credentials as BotoCredentials
from sqlalchemy import Engine, select, text

from harness import Browser, Origin, Server, express_server, laravel_server, require_tools
from helpers import add_app_token, reset_database
from tokenmigration.cli.api import ApiClient
from tokenmigration.db.schema import laravel_users, sessions
from tokenmigration.formats.express import cookie_value, unsign_cookie
from tokenmigration.formats.laravel_cookie import read_session_cookie
from tokenmigration.local.server import Credentials, start_in_background
from tokenmigration.local.twin import DEFAULT_EXPRESS_SECRET, LocalTwin

KEY, SECRET, REGION = "AKIABRIDGEBROWSER001", "bridge-browser-test-secret-access-key", "us-east-1"
LARAVEL_COOKIE = "laravel_session"
EXPRESS_COOKIE = "connect.sid"
POLL_LIMIT = 120.0  # seconds: a bound on waiting for a run, never a timing assertion

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore:No application metrics to publish")]


@dataclass(frozen=True)
class Person:
    id: int
    username: str
    name: str

    @property
    def password(self) -> str:
        return f"{self.username}-password"


ANN = Person(101, "ann", "Ann Bulk")           # logged in before the bulk run
BOB = Person(102, "bob", "Bob Late")           # logged in after the bulk run
CARL = Person(103, "carl", "Carl Apptoken")    # holds a token the app made (a mobile app's)
DORA = Person(104, "dora", "Dora Expired")     # her Express session expires before cutover
ERIN = Person(105, "erin", "Erin Paused")      # first comes to Laravel while the exchange is off
FRANK = Person(106, "frank", "Frank Late")     # first comes to Laravel after /complete
PEOPLE = (ANN, BOB, CARL, DORA, ERIN, FRANK)


@dataclass
class World:
    engine: Engine
    redis: redis.Redis
    api: ApiClient
    twin: LocalTwin
    origin: Origin
    express: Server
    laravel: Server
    app_key: str
    bridge_calls: list[str] = field(default_factory=list)
    browsers: dict[str, Browser] = field(default_factory=dict)

    def browser(self, name: str) -> Browser:
        if name not in self.browsers:
            self.browsers[name] = Browser(name, self.origin)
        return self.browsers[name]

    def laravel_session(self, browser: Browser) -> tuple[str | None, int | None]:
        """(session id, user_id of its row) named by the browser's Laravel session cookie."""
        cookie = browser.cookies().get(LARAVEL_COOKIE)
        assert cookie is not None, f"{browser.name}'s browser holds no {LARAVEL_COOKIE} cookie"
        assert cookie["httpOnly"] is True
        session_id = read_session_cookie(LARAVEL_COOKIE, cookie["value"], self.app_key)
        assert session_id is not None, "the Laravel session cookie does not decrypt with the app key"
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions.c.user_id).where(sessions.c.id == session_id)).first()
        return session_id, (row.user_id if row else None)

    def forget_bridge_memory(self) -> None:
        """The bridge remembers "off" for TOKENMIGRATION_BRIDGE_OFF_SECONDS; clearing the app's cache stands in
        for waiting that long."""
        data = Path(self.laravel.env["APP_STORAGE"]) / "framework" / "cache" / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)


def _wait_for_run(api: ApiClient, run_id: str) -> dict:
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        response = api.request("GET", "/progress", query={"migration_id": run_id})
        assert response.status == 200, response.text
        progress = response.document["progress"]
        if progress["status"] != "RUNNING":
            return progress
        assert time.monotonic() < deadline, f"{run_id} still RUNNING: {progress}"
        time.sleep(0.1)


def _express_sid(browser: Browser) -> str:
    value = browser.cookies()[EXPRESS_COOKIE]["value"]
    sid = unsign_cookie(value, [DEFAULT_EXPRESS_SECRET])
    assert sid is not None
    return sid


@pytest.fixture(scope="module")
def world(_pg_engine: Engine, redis_url: str, tmp_path_factory) -> World:
    require_tools()
    workdir = tmp_path_factory.mktemp("bridge-browser")
    engine = _pg_engine
    reset_database(engine)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    with engine.begin() as conn:
        conn.execute(laravel_users.insert(), [
            {"id": p.id, "name": p.name, "email": f"{p.username}@example.test", "password": "x"} for p in PEOPLE
        ])
    add_app_token(engine, CARL.id, name="carl's phone")

    twin = LocalTwin(database_url=engine.url.render_as_string(hide_password=False), redis_url=redis_url,
                     region=REGION, log_level="ERROR", extra_env={"FLAGS_MAX_AGE_SECONDS": "0"})
    running = start_in_background(twin, Credentials(KEY, SECRET, REGION))
    stack = contextlib.ExitStack()
    stack.callback(running.stop)
    try:
        calls: list[str] = []
        invoke = twin.invoke

        def counting_invoke(name, event):  # which Lambda the bridge route reached, so cases can count calls
            if str(event.get("path", "")).endswith("/bridge"):
                calls.append(event["path"])
            return invoke(name, event)

        twin.invoke = counting_invoke
        api = ApiClient(running.url, credentials=BotoCredentials(KEY, SECRET), region=REGION)

        express = express_server(workdir, redis_url, DEFAULT_EXPRESS_SECRET,
                                 [{"id": p.id, "username": p.username, "password": p.password, "name": p.name}
                                  for p in PEOPLE]).start()
        stack.callback(express.stop)
        origin = Origin()
        stack.callback(origin.stop)
        origin.switch_to(express)
        url = engine.url
        laravel = laravel_server(workdir, {
            "APP_KEY": twin.app_key, "APP_DEBUG": "false",
            "DB_CONNECTION": "pgsql", "DB_HOST": url.host or "127.0.0.1", "DB_PORT": str(url.port or 5432),
            "DB_DATABASE": url.database, "DB_USERNAME": url.username or "postgres",
            "DB_PASSWORD": url.password or "", "SESSION_COOKIE": LARAVEL_COOKIE,
            "TOKENMIGRATION_API_URL": running.url, "TOKENMIGRATION_API_REGION": REGION,
            "TOKENMIGRATION_AWS_ACCESS_KEY_ID": KEY, "TOKENMIGRATION_AWS_SECRET_ACCESS_KEY": SECRET,
        })
        world = World(engine, client, api, twin, origin, express, laravel, twin.app_key, calls)
        stack.callback(lambda: [b.quit() for b in world.browsers.values()])

        # --- Express days: people log in through the form.
        for person in (ANN, CARL, DORA, ERIN, FRANK):
            assert world.browser(person.username).log_in(person.username, person.password) == \
                f"logged in as {person.username}"
        world.browsers["ann"].screenshot("00-express-ann-logged-in")

        # --- The bulk run, through the twin's signed API and the real state machine.
        started = api.request("POST", "/start", {"confirm": True})
        assert started.status == 202, started.text
        progress = _wait_for_run(api, started.document["migration_id"])
        assert progress["status"] == "SUCCEEDED", progress
        assert progress["sessions_migrated"] == 5, progress  # everyone logged in, carl (token holder) too

        # --- After the run: Bob logs in; Dora's Express session expires (connect-redis's key is gone).
        assert world.browser("bob").log_in(BOB.username, BOB.password) == "logged in as bob"
        assert client.delete("sess:" + _express_sid(world.browsers["dora"])) == 1
        assert world.browsers["dora"].open("/") == "not logged in"  # Express itself no longer knows her

        # --- Cutover: the same origin is now served by Laravel with the bridge.
        laravel.start()
        stack.callback(laravel.stop)
        origin.switch_to(laravel)
        yield world
    finally:
        stack.close()
        client.flushdb()
        client.close()


def _open_bridged(world: World, person: Person, case: str) -> str:
    """Reload the person's browser on the Laravel origin; assert the one request logged them in."""
    browser = world.browsers[person.username]
    calls_before, requests_before = len(world.bridge_calls), len(world.origin.requests)
    assert browser.open("/") == f"logged in as {person.name}"
    assert browser.title() == "Laravel app"
    browser.screenshot(case)
    # One GET, answered 200: no redirect, no login prompt; it called the bridge exactly once.
    assert world.origin.requests[requests_before:requests_before + 1] == [("GET", "/", 200)]
    assert len(world.bridge_calls) == calls_before + 1
    session_id, user_id = world.laravel_session(browser)
    assert user_id == person.id
    assert EXPRESS_COOKIE in browser.cookies()  # left alone: a rollback may need it again
    # Later requests ride the Laravel session: no bridge call.
    assert browser.open("/") == f"logged in as {person.name}"
    assert len(world.bridge_calls) == calls_before + 1
    assert world.laravel_session(browser) == (session_id, person.id)
    return session_id


def test_user_migrated_in_bulk_is_logged_in_on_the_first_laravel_request(world):
    _open_bridged(world, ANN, "01-bulk-migrated-ann")


def test_user_who_logged_in_after_the_bulk_run_is_migrated_on_the_spot(world):
    _open_bridged(world, BOB, "02-after-bulk-run-bob")
    with world.engine.connect() as conn:
        migrated = conn.execute(text("SELECT migrated_to_sanctum_at FROM users WHERE id = :id"),
                                {"id": BOB.id}).scalar_one()
    assert migrated is not None


def test_user_holding_an_app_made_token_keeps_their_session(world):
    _open_bridged(world, CARL, "03-app-token-holder-carl")


def test_expired_express_session_gives_an_ordinary_guest_page(world):
    browser = world.browsers["dora"]
    requests_before = len(world.origin.requests)
    assert browser.open("/") == "not logged in"
    assert browser.title() == "Laravel app"
    browser.screenshot("04-expired-express-session-dora")
    assert world.origin.requests[requests_before:] == [("GET", "/", 200)]  # no error page, no redirect
    _, user_id = world.laravel_session(browser)
    assert user_id is None  # a guest session: the row the bulk run made for her is held by nobody


def test_forged_cookie_gives_a_guest_page_and_is_not_asked_about_again(world):
    browser = world.browser("mallory")
    forged = cookie_value(secrets.token_urlsafe(24), "not-the-app-secret")
    browser.add_cookie(EXPRESS_COOKIE, forged)
    calls_before, requests_before = len(world.bridge_calls), len(world.origin.requests)
    assert browser.open("/") == "not logged in"
    browser.screenshot("05-forged-cookie")
    assert ("GET", "/", 200) in world.origin.requests[requests_before:]
    assert len(world.bridge_calls) == calls_before + 1
    assert world.laravel_session(browser)[1] is None
    assert browser.open("/") == "not logged in"
    assert len(world.bridge_calls) == calls_before + 1  # the refusal is remembered (by the cookie's hash)


def test_exchange_switched_off_leaves_new_browsers_guests_and_bridged_ones_logged_in(world):
    from tokenmigration.aws.context import services

    services().flags.set(exchange_enabled=False)
    try:
        erin = world.browsers["erin"]
        calls_before = len(world.bridge_calls)
        assert erin.open("/") == "not logged in"
        erin.screenshot("06-exchange-off-erin-guest")
        assert len(world.bridge_calls) == calls_before + 1  # answered bridge_off
        assert erin.open("/") == "not logged in"
        assert len(world.bridge_calls) == calls_before + 1  # "off" is remembered: no call
        assert world.laravel_session(erin)[1] is None

        ann = world.browsers["ann"]
        assert ann.open("/") == f"logged in as {ANN.name}"
        ann.screenshot("06-exchange-off-ann-still-logged-in")
        assert world.laravel_session(ann)[1] == ANN.id
    finally:
        services().flags.set(exchange_enabled=True)
        world.forget_bridge_memory()
    _open_bridged(world, ERIN, "06-exchange-on-again-erin")


def test_after_a_rollback_the_bridge_carries_browsers_again(world):
    ann = world.browsers["ann"]
    before, _ = world.laravel_session(ann)
    started = world.api.request("POST", "/rollback", {"confirm": True})
    assert started.status == 202, started.text
    progress = _wait_for_run(world.api, started.document["rollback_id"])
    assert progress["status"] == "SUCCEEDED", progress
    flags = world.api.request("GET", "/stats").document["feature_flags"]
    assert flags["auth_mode"] == "dual"
    with world.engine.connect() as conn:
        assert conn.execute(select(sessions.c.id).where(sessions.c.id == before)).first() is None

    after = _open_bridged(world, ANN, "07-after-rollback-ann")
    assert after != before
    _open_bridged(world, CARL, "07-after-rollback-carl")


def test_after_complete_carried_browsers_stay_and_nobody_new_is_carried(world):
    completed = world.api.request("POST", "/complete", {"confirm": True})
    assert completed.status == 200, completed.text
    assert completed.document["auth_mode"] == "sanctum_only"
    world.forget_bridge_memory()

    frank = world.browsers["frank"]
    calls_before = len(world.bridge_calls)
    assert frank.open("/") == "not logged in"
    frank.screenshot("08-after-complete-frank-guest")
    assert len(world.bridge_calls) == calls_before + 1  # answered bridge_off: token-only now
    assert world.laravel_session(frank)[1] is None

    ann = world.browsers["ann"]
    assert ann.open("/") == f"logged in as {ANN.name}"
    ann.screenshot("08-after-complete-ann-still-logged-in")
    assert world.laravel_session(ann)[1] == ANN.id
    assert len(world.bridge_calls) == calls_before + 1
