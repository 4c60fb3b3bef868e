"""The pieces of the browser test: the legacy Express app (node), the Laravel app with the bridge (PHP's built-in
server on Debian's Laravel), one origin in front of them that is switched from one to the other at cutover, and
headless Chromium (Debian's, through Debian's chromedriver). A missing tool fails the test, never skips it."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXPRESS_APP = HERE / "express_app"
LARAVEL_APP = HERE / "laravel_app"
BRIDGE_PACKAGE = REPO / "integrations" / "laravel"
CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BINARY", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
NAVIGATION_LIMIT = 60.0  # seconds a form submission may take: a bound, never a timing assertion
START_LIMIT = 60.0  # seconds a server may take to start listening: a bound, never a timing assertion


def require_tools() -> None:
    """Fail loudly (with the install command) when a tool this test needs is missing."""
    missing = [name for name in ("php", "node") if shutil.which(name) is None]
    missing += [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    missing += [path for path in ("/usr/share/php/Illuminate/autoload.php",
                                  "/usr/share/php/AsyncAws/Core/autoload.php") if not Path(path).exists()]
    if not (EXPRESS_APP / "node_modules" / "express-session").is_dir():
        missing.append(f"{EXPRESS_APP}/node_modules (run `make browser-deps`: npm ci)")
    if missing:
        pytest.fail("the browser test needs: " + ", ".join(missing) + " (bash .ci/run installs them: php-cli "
                    "php-laravel-framework php-pgsql php-async-aws-core chromium chromium-driver nodejs npm)",
                    pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {START_LIMIT}s: {log.read_text()[-2000:]}")


@dataclass
class Server:
    """A child process serving HTTP on 127.0.0.1:port; its output goes to a log file."""

    name: str
    command: list[str]
    cwd: Path
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        env = {**self.env, "PORT": str(self.port)}
        self.process = subprocess.Popen(command, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        wait_listening(self.port, self.process, self.log)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def express_server(workdir: Path, redis_url: str, secret: str, users: list[dict]) -> Server:
    users_file = workdir / "express-users.json"
    users_file.write_text(json.dumps(users))
    env = {"PATH": os.environ["PATH"], "REDIS_URL": redis_url, "SESSION_SECRETS": secret,
           "USERS_FILE": str(users_file)}
    return Server("express", ["node", "server.js"], EXPRESS_APP, env, workdir / "express.log")


def laravel_server(workdir: Path, env: dict[str, str]) -> Server:
    storage = workdir / "laravel-storage"
    for sub in ("framework/cache/data", "framework/sessions", "framework/views", "logs"):
        (storage / sub).mkdir(parents=True, exist_ok=True)
    base = {
        "PATH": os.environ["PATH"],
        "APP_STORAGE": str(storage),
        "APP_PACKAGES_CACHE": str(storage / "packages.php"),
        "APP_SERVICES_CACHE": str(storage / "services.php"),
        "TOKENMIGRATION_BRIDGE_PACKAGE": str(BRIDGE_PACKAGE),
        # Two workers: the bridged request and the browser's favicon request do not queue behind each other.
        "PHP_CLI_SERVER_WORKERS": "2",
    }
    return Server("laravel", ["php", "-S", "127.0.0.1:{port}", "-t", "public", "public/index.php"],
                  LARAVEL_APP, {**base, **env}, workdir / "laravel.log")


# --- one origin ------------------------------------------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "content-length"}


class Origin:
    """The app's one public host:port. At cutover the operator points it at the Laravel app (a load balancer's
    target, a reverse proxy's upstream): ``switch_to`` does that; the browser never sees another origin."""

    def __init__(self) -> None:
        self.backend: str | None = None
        # (method, path, status) of every page request, so a test can tell one answer from a redirect chain.
        self.requests: list[tuple[str, str, int]] = []
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                host, port = origin.backend.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                if not self.path.startswith("/favicon.ico"):  # the browser asks for it on its own
                    origin.requests.append((self.command, self.path, answer.status))
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():  # every Set-Cookie, as sent
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True, name="origin")
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def switch_to(self, server: Server) -> None:
        self.backend = f"127.0.0.1:{server.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the browser ----------------------------------------------------------------------------------------------

class Browser:
    """One person's headless Chromium, with its own profile (cookie jar)."""

    def __init__(self, name: str, origin: Origin) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,420",
                    "--disable-gpu", "--no-first-run", "--disable-extensions"):
            options.add_argument(arg)
        self.name = name
        self.origin = origin
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))

    def open(self, path: str = "/") -> str:
        self.driver.get(self.origin.url + path)
        return self.who()

    def who(self) -> str:
        """The page's "logged in as ..." line; a page without one (an error page) fails with its text."""
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.ID, "who")
        if not found:
            text = self.driver.find_element(By.TAG_NAME, "body").text
            pytest.fail(f"{self.name}: {self.driver.current_url} shows no #who line: {text[:1500]!r}")
        return found[0].text

    def title(self) -> str:
        return self.driver.title

    def log_in(self, username: str, password: str) -> str:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        self.open("/")
        form_page = self.driver.find_element(By.ID, "who")
        self.driver.find_element(By.ID, "username").send_keys(username)
        self.driver.find_element(By.ID, "password").send_keys(password)
        self.driver.find_element(By.ID, "login").click()
        # click() does not wait for the form's POST and redirect: wait until the form page is gone.
        wait = WebDriverWait(self.driver, NAVIGATION_LIMIT)
        wait.until(lambda _driver: _is_gone(form_page))
        wait.until(expected_conditions.presence_of_element_located((By.ID, "who")))
        return self.who()

    def cookies(self) -> dict[str, dict]:
        return {c["name"]: c for c in self.driver.get_cookies()}

    def add_cookie(self, name: str, value: str) -> None:
        self.driver.get(self.origin.url + "/favicon.ico")  # a page of the origin, so the cookie is its own
        self.driver.add_cookie({"name": name, "value": value, "path": "/", "httpOnly": True})

    def screenshot(self, case: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{case}.png"
        self.driver.save_screenshot(str(path))
        return path

    def quit(self) -> None:
        self.driver.quit()


def _is_gone(element) -> bool:
    """Whether a page's element went with its page. Mid-navigation chromedriver may answer "Node with given id
    does not belong to the document" (an unknown error, not StaleElementReferenceException, so Selenium's
    staleness_of raised it and failed the test): that too means the old document is gone."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if "does not belong to the document" in str(error):
            return True
        raise
    return False
