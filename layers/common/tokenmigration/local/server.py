"""``tokenmigration local serve``: template.yaml's API over HTTP on this machine.

Every ``Type: Api`` event of the template is a route; a request becomes the API Gateway REST proxy event
its function's ``lambda_handler`` gets on AWS, and the handler's answer goes back as the HTTP response. Admin
routes (the API's ``DefaultAuthorizer: AWS_IAM``, unless a route says ``Authorizer: NONE``) check SigV4 as API
Gateway's IAM authorizer does, against the one key pair the server was started with.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tokenmigration.local.sigv4 import MISSING_TOKEN, Caller, SignatureError, verify
from tokenmigration.local.twin import LocalTwin

MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
MAX_REQUEST_LINE_AND_HEADERS = 10240  # API Gateway's quota: request line and header values, combined


@dataclass(frozen=True)
class Route:
    method: str  # GET, POST, ...
    resource: str  # /auth/migration/user/{userId}
    function: str  # logical id
    iam: bool  # SigV4 required
    pattern: re.Pattern[str]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}


def routes_from_template(template: dict[str, Any]) -> list[Route]:
    """The API's routes: every ``Type: Api`` event of every function, with the API's default authorizer."""
    resources = template["Resources"]
    apis = {logical_id: r for logical_id, r in resources.items() if r["Type"] == "AWS::Serverless::Api"}
    routes = []
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in (resource["Properties"].get("Events") or {}).values():
            if event.get("Type") != "Api":
                continue
            props = event["Properties"]
            api_ref = props.get("RestApiId", {})
            api = apis.get(api_ref.get("Ref") if isinstance(api_ref, dict) else api_ref, {})
            default = api.get("Properties", {}).get("Auth", {}).get("DefaultAuthorizer", "NONE")
            authorizer = (props.get("Auth") or {}).get("Authorizer", default)
            resource_path = props["Path"]
            regex = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(resource_path))
            routes.append(Route(props["Method"].upper(), resource_path, logical_id, authorizer == "AWS_IAM",
                                re.compile(regex)))
    return routes


@dataclass
class Credentials:
    access_key: str
    secret_key: str
    region: str
    generated: bool = False


class LocalApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    # Both stacks on a dual-stack host, as API Gateway's edge would accept them.

    def __init__(self, address: tuple[str, int], twin: LocalTwin, credentials: Credentials,
                 quiet: bool = False) -> None:
        super().__init__(address, ApiRequestHandler)
        self.twin = twin
        self.credentials = credentials
        self.quiet = quiet
        self.routes: list[Route] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        stage = self.twin.deployment.stage if self.twin.deployment else "dev"
        return f"http://{host}:{port}/{stage}"

    def attach(self) -> None:
        """Once the twin runs: its routes, from its template."""
        assert self.twin.deployment is not None
        self.routes = routes_from_template(self.twin.deployment.template)


# What Python's HTTP server refuses before a request reaches _handle (a method it has no do_ for, a header
# line over 64 KiB, a malformed request line), answered as API Gateway answers: JSON, never an HTML page.
_GATEWAY_REFUSALS: dict[int, tuple[int, str, str | None]] = {
    HTTPStatus.NOT_IMPLEMENTED: (403, MISSING_TOKEN, "MissingAuthenticationTokenException"),  # TRACE, CONNECT, ...
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: (431, "Request Header Fields Too Large", None),
    HTTPStatus.REQUEST_URI_TOO_LONG: (414, "Request-URI Too Long", None),
}


class ApiRequestHandler(BaseHTTPRequestHandler):
    server: LocalApiServer
    protocol_version = "HTTP/1.1"
    server_version = "tokenmigration-local"

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        status, text, error_type = _GATEWAY_REFUSALS.get(code, (int(code), None, None))
        if text is None:
            text = self.responses.get(code, ("Bad Request",))[0] if 400 <= status < 500 else "Internal server error"
        self.log_error("code %d, message %s", status, message or text)
        self.close_connection = True
        pairs = [("Content-Type", "application/json"), ("Connection", "close")]
        if error_type:
            pairs.append(("x-amzn-ErrorType", error_type))
        self._write(status, pairs, json.dumps({"message": text}).encode("utf-8"), str(uuid.uuid4()))

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    # --- one request ----------------------------------------------------------------------------------

    def _handle(self) -> None:
        request_id = str(uuid.uuid4())
        if len(self.requestline) + sum(len(v) for v in self.headers.values()) > MAX_REQUEST_LINE_AND_HEADERS:
            self.close_connection = True
            self._send(431, {"message": "Request Header Fields Too Large"}, request_id)
            return
        body = self._body(request_id)
        if body is None:
            return
        twin = self.server.twin
        stage = twin.deployment.stage if twin.deployment else "dev"
        raw_path = self.path
        parts = urlsplit(raw_path)
        path = parts.path
        if path == f"/{stage}" or path.startswith(f"/{stage}/"):
            path = path[len(stage) + 1:] or "/"
        route, path_parameters = None, None
        for candidate in self.server.routes:
            found = candidate.match(path)
            if found is not None and candidate.method == self.command:
                route, path_parameters = candidate, found
                break
        if route is None:
            # API Gateway answers an unknown path or method this way, signed or not.
            self._send(403, {"message": MISSING_TOKEN}, request_id, error_type="MissingAuthenticationTokenException")
            return
        headers = [(k, v) for k, v in self.headers.items()]
        caller: Caller | None = None
        if route.iam:
            creds = self.server.credentials
            host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
            try:
                caller = verify(self.command, f"http://{host}{raw_path}", _MultiHeaders(headers), body,
                                access_key=creds.access_key, secret_key=creds.secret_key, region=creds.region,
                                account=twin.account)
            except SignatureError as refused:
                self._send(403, {"message": refused.message}, request_id, error_type=refused.error_type)
                return
        event = self._event(route, path, stage, parts.query, path_parameters or None, headers, body, caller,
                            request_id)
        try:
            result = twin.invoke(route.function, event)
        except Exception as error:  # what API Gateway says when the function failed
            if not self.server.quiet:
                sys.stderr.write(f"{route.function}: {type(error).__name__}: {error}\n")
            self._send(502, {"message": "Internal server error"}, request_id)
            return
        self._send_result(result, request_id)

    def _body(self, request_id: str) -> bytes | None:
        """The request's body (Content-Length or chunked), or None once a refusal was sent."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    return self._refuse(400, "Bad Request", request_id)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return self._refuse(413, "Request Too Long", request_id)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not raw.isdigit():
            return self._refuse(400, "Bad Request", request_id)
        length = int(raw)
        if length > MAX_BODY:
            return self._refuse(413, "Request Too Long", request_id)
        return self.rfile.read(length) if length else b""

    def _refuse(self, status: int, message: str, request_id: str) -> None:
        self.close_connection = True  # the unread body must not be taken for the next request
        self._send(status, {"message": message}, request_id)
        return None

    def _event(self, route: Route, path: str, stage: str, query: str, path_parameters: dict[str, str] | None,
               headers: list[tuple[str, str]], body: bytes, caller: Caller | None, request_id: str
               ) -> dict[str, Any]:
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for name, value in headers:
            single[name] = value
            multi.setdefault(name, []).append(value)
        query_multi: dict[str, list[str]] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            query_multi.setdefault(name, []).append(value)
        try:
            text, encoded = (body.decode("utf-8"), False) if body else (None, False)
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
        now = datetime.now(UTC)
        host = single.get("Host") or self.headers.get("Host") or ""
        identity = {
            "cognitoIdentityPoolId": None, "cognitoIdentityId": None, "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None, "principalOrgId": None,
            "accountId": caller.account if caller else None,
            "caller": caller.caller if caller else None,
            "user": caller.caller if caller else None,
            "userArn": caller.user_arn if caller else None,
            "accessKey": caller.access_key if caller else None,
            "sourceIp": self.client_address[0],
            "userAgent": single.get("User-Agent") or self.headers.get("User-Agent"),
        }
        return {
            "resource": route.resource,
            "path": path,
            "httpMethod": self.command,
            "headers": single or None,
            "multiValueHeaders": multi or None,
            "queryStringParameters": {k: v[-1] for k, v in query_multi.items()} or None,
            "multiValueQueryStringParameters": query_multi or None,
            "pathParameters": path_parameters,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "local", "resourcePath": route.resource, "operationName": None,
                "httpMethod": self.command, "extendedRequestId": request_id[:16],
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"), "path": f"/{stage}{path}",
                "accountId": self.server.twin.account, "protocol": self.request_version, "stage": stage,
                "domainPrefix": host.split(".", 1)[0].split(":", 1)[0], "requestTimeEpoch": int(time.time() * 1000),
                "requestId": request_id, "identity": identity, "domainName": host.split(":", 1)[0],
                "deploymentId": "local", "apiId": "local",
            },
            "body": text,
            "isBase64Encoded": encoded,
        }

    def _send_result(self, result: Any, request_id: str) -> None:
        if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
            self._send(502, {"message": "Internal server error"}, request_id)
            return
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
        pairs: list[tuple[str, str]] = []
        multi = result.get("multiValueHeaders") or {}
        for name, values in multi.items():
            pairs += [(name, str(v)) for v in values]
        taken = {name.lower() for name in multi}
        pairs += [(k, str(v)) for k, v in (result.get("headers") or {}).items() if k.lower() not in taken]
        self._write(result["statusCode"], pairs, data, request_id)

    def _send(self, status: int, document: dict[str, Any], request_id: str, error_type: str | None = None) -> None:
        pairs = [("Content-Type", "application/json")]
        if error_type:
            pairs.append(("x-amzn-ErrorType", error_type))
        self._write(status, pairs, json.dumps(document).encode("utf-8"), request_id)

    def _write(self, status: int, pairs: list[tuple[str, str]], data: bytes, request_id: str) -> None:
        self.send_response(status)
        for name, value in pairs:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _MultiHeaders(dict):
    """Headers as received, repeated names kept: ``items()`` yields every (name, value) pair."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self._pairs = pairs
        for name, value in pairs:
            self[name] = value

    def items(self):  # type: ignore[override]
        return iter(self._pairs)


class PortInUse(Exception):
    pass


def bind(host: str, port: int, twin: LocalTwin, credentials: Credentials, quiet: bool = False) -> LocalApiServer:
    """Bind first (a taken port fails before anything starts)."""
    try:
        return LocalApiServer((host, port), twin, credentials, quiet=quiet)
    except OSError as error:
        raise PortInUse(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


@dataclass
class RunningServer:
    """A server on a background thread (tests, the demo): ``url``, ``credentials``, ``twin``; ``stop()``."""

    server: LocalApiServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def twin(self) -> LocalTwin:
        return self.server.twin

    @property
    def credentials(self) -> Credentials:
        return self.server.credentials

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        self.server.twin.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_background(twin: LocalTwin, credentials: Credentials, host: str = "127.0.0.1", port: int = 0,
                        quiet: bool = True) -> RunningServer:
    server = bind(host, port, twin, credentials, quiet=quiet)
    try:
        twin.start()
        server.attach()
    except BaseException:
        server.server_close()
        raise
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="local-api",
                              daemon=True)
    thread.start()
    return RunningServer(server, thread)
