"""``tokenmigration api ...``: the operator's client of the migration API, deployed or local.

Endpoint from ``--endpoint`` or ``TOKENMIGRATION_API_URL`` (the stack's ApiUrl output, or what
``tokenmigration local serve`` prints); every admin request is signed with SigV4 (service ``execute-api``)
with the standard AWS credential chain (environment, profiles, SSO).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote, urlencode, urlsplit

from tokenmigration.cli.arguments import positive_int
from tokenmigration.cli.output import table
from tokenmigration.cli.prompt import confirm

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BASE_PATH = "/auth/migration"
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com", re.IGNORECASE)


class ApiUsageError(Exception):
    """No endpoint, no credentials, unreachable: exit 2 with this message."""


@dataclass
class Response:
    status: int
    document: Any
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        doc = self.document if isinstance(self.document, dict) else {}
        message = doc.get("message") or doc.get("error_description") or doc.get("error")
        if doc.get("errors") and isinstance(doc["errors"], dict):
            details = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in doc["errors"].items())
            message = f"{message or 'invalid request'} ({details})"
        return str(message or self.text or f"HTTP {self.status}")


class ApiClient:
    def __init__(self, endpoint: str, credentials: Any = None, region: str | None = None,
                 timeout: float = 60.0) -> None:
        if not endpoint:
            raise ApiUsageError("no endpoint: pass --endpoint or set TOKENMIGRATION_API_URL (the stack's ApiUrl "
                                "output, or the URL `tokenmigration local serve` prints)")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ApiUsageError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        base = endpoint.rstrip("/")
        self.base = base if base.endswith(BASE_PATH) else base + BASE_PATH
        found = _REGION_IN_HOST.search(parts.netloc)
        self.region = region or (found.group(1) if found else None) or os.environ.get("AWS_DEFAULT_REGION") \
            or os.environ.get("AWS_REGION") or "us-east-1"
        self._credentials = credentials
        self.timeout = timeout

    def credentials(self) -> Any:
        if self._credentials is None:
            import botocore.session

            found = botocore.session.Session().get_credentials()
            if found is None:
                raise ApiUsageError("no AWS credentials found (environment, ~/.aws profiles, SSO): the API needs "
                                    "SigV4-signed requests")
            self._credentials = found
        return self._credentials

    def request(self, method: str, route: str, body: Any = None, query: dict[str, Any] | None = None,
                signed: bool = True) -> Response:
        from tokenmigration.local.sigv4 import sign

        url = self.base + quote(route, safe="/")
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urlencode(params, quote_via=quote)
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if signed:
            credentials = self.credentials()
            frozen = credentials.get_frozen_credentials() if hasattr(credentials, "get_frozen_credentials") \
                else credentials
            headers = sign(method, url, headers, data, frozen, self.region)
        request = urllib.request.Request(url, data=data if body is not None else None, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as answer:
            status, raw = answer.code, answer.read()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ApiUsageError(f"cannot reach {self.base}: {reason}") from None
        text = raw.decode("utf-8", "replace")
        try:
            document = json.loads(text) if text else None
        except ValueError:
            document = None
        return Response(status, document, text)


    def bridge(self, session_cookie: str, client_ip: str | None = None) -> Response:
        """POST /bridge as the Laravel app's server calls it (docs/api.md, "Server route"): signed, JSON body."""
        body: dict[str, Any] = {"session_cookie": session_cookie}
        if client_ip is not None:
            body["client_ip"] = client_ip
        return self.request("POST", "/bridge", body)


# --- the command line --------------------------------------------------------------------------------------




def _bounded(top: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = positive_int(text)
        if value > top:
            raise argparse.ArgumentTypeError(f"must be at most {top}")
        return value

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    api = sub.add_parser("api", help="the migration API's client (SigV4-signed), deployed or local")
    api.add_argument("--endpoint", default=None, help="API base URL (default: TOKENMIGRATION_API_URL)")
    api.add_argument("--region", default=None, help="signing region (default: from the endpoint, else "
                     "AWS_DEFAULT_REGION)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's JSON document")
    confirmable = argparse.ArgumentParser(add_help=False)
    confirmable.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    watchable = argparse.ArgumentParser(add_help=False)
    watchable.add_argument("--watch", action="store_true", help="show a live progress bar until the run ends")
    watchable.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    verbs = api.add_subparsers(dest="api_command", required=True, metavar="VERB")

    start = verbs.add_parser("start", parents=[common, confirmable, watchable], help="start a migration run")
    start.add_argument("--dry-run", action="store_true", help="compute the counts, write nothing")
    start.add_argument("--chunk-size", type=_bounded(10_000), help="users per chunk (1..10000)")
    start.add_argument("--max-concurrency", type=_bounded(1000), help="chunks at once (1..1000)")
    progress = verbs.add_parser("progress", parents=[common, watchable], help="a run's progress (default: latest)")
    progress.add_argument("--id", dest="run_id", help="run id (migration or rollback)")
    verbs.add_parser("complete", parents=[common, confirmable], help="switch to Sanctum only")
    verbs.add_parser("rollback", parents=[common, confirmable, watchable],
                     help="remove everything the tool created, for every user")
    verbs.add_parser("stats", parents=[common], help="migration state and feature flags")
    cleanup = verbs.add_parser("cleanup", parents=[common], help="prune expired tokens, stale sessions, old rows")
    cleanup.add_argument("--dry-run", action="store_true", help="report what would be removed")
    errors = verbs.add_parser("errors", parents=[common], help="per-user problems of a run (default: latest)")
    errors.add_argument("--id", dest="run_id", help="run id")
    errors.add_argument("--limit", type=_bounded(1000), default=None, help="rows per page")
    errors.add_argument("--cursor", default=None, help="next_cursor of the previous page")
    migrate_user = verbs.add_parser("migrate-user", parents=[common], help="migrate one user now")
    migrate_user.add_argument("user_id")
    rollback_user = verbs.add_parser("rollback-user", parents=[common], help="roll one user back")
    rollback_user.add_argument("user_id")
    bridge = verbs.add_parser("bridge", parents=[common],
                              help="as the Laravel app's server: the Laravel session of a browser's connect.sid")
    bridge.add_argument("--cookie", required=True, help="the connect.sid cookie value as the browser sent it "
                        "(a credential: prefer --cookie - and stdin over the command line)")
    bridge.add_argument("--client-ip", default=None, help="the browser's IP address as the app sees it")


def _print_json(document: Any, out: TextIO) -> None:
    out.write(json.dumps(document, indent=2, default=str) + "\n")


def _refused(response: Response, as_json: bool, out: TextIO) -> int:
    if as_json and response.document is not None:
        _print_json(response.document, out)
    print(f"tokenmigration api: HTTP {response.status}: {response.message}", file=sys.stderr)
    return EXIT_FAILED


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


PROGRESS_FIELDS = ("migration_id", "kind", "status", "dry_run", "total_users", "processed_users", "migrated_users",
                   "skipped_users", "failed_migrations", "sessions_migrated", "current_batch", "total_batches",
                   "percentage", "started_at", "updated_at", "finished_at", "estimated_completion")


def progress_table(document: dict[str, Any]) -> str:
    run = document.get("progress")
    if not run:
        return "no run has been started yet"
    rows = [(name.replace("_", " "), _cell(run.get(name))) for name in PROGRESS_FIELDS if name in run]
    rows += [("in progress", _cell(document.get("is_in_progress"))),
             ("rollback available", _cell(document.get("can_rollback")))]
    error = run.get("error")
    if error:
        rows.append(("error", f"{error.get('type')}: {error.get('message')}"))
    return table(rows)


def failure_lines(run: dict[str, Any]) -> list[str]:
    """Why a run ended without succeeding, and where to look next (locally and on AWS)."""
    run_id = run.get("migration_id")
    error = run.get("error") or {}
    lines = [f"run {run_id} ended {run.get('status')}"
             + (f": {error.get('type')}: {error.get('message')}" if error else "")]
    lines.append(f"  per-user problems: tokenmigration api errors --id {run_id}")
    lines.append("  on AWS, after fixing the cause, go on where it stopped: aws stepfunctions redrive-execution "
                 "--execution-arn <the run's execution_arn>")
    return lines


def stats_table(document: dict[str, Any]) -> str:
    rows = [(k.replace("_", " "), _cell(v)) for k, v in (document.get("stats") or {}).items()]
    flags = document.get("feature_flags") or {}
    if flags:
        rows.append(("feature flags", ""))
        rows += [(f"  {k}", _cell(v)) for k, v in flags.items()]
    text = table(rows)
    if (document.get("stats") or {}).get("exact") is False:
        text += ("\n(estimates: the users table is too large to count within API Gateway's time limit; "
                 "`tokenmigration stats` on a machine that reaches the database counts it)")
    return text


def _summary(response: Response) -> str:
    doc = response.document if isinstance(response.document, dict) else {}
    rows = [(k.replace("_", " "), _cell(v)) for k, v in doc.items()
            if k not in ("success",) and not isinstance(v, dict | list)]
    for key, value in doc.items():
        if isinstance(value, dict):
            rows += [(f"{key.replace('_', ' ')}: {k.replace('_', ' ')}", _cell(v)) for k, v in value.items()]
    return table(rows)


def _summary_from_progress(run: dict[str, Any]):
    """The progress document as the RunSummary the one-machine ProgressBar draws."""
    from tokenmigration.local_driver import RunSummary

    summary = RunSummary(run_id=run.get("migration_id") or "", kind=run.get("kind") or "migration",
                         dry_run=bool(run.get("dry_run")), phase="migrating")
    summary.total_users = int(run.get("total_users") or 0)
    summary.processed_users = int(run.get("processed_users") or 0)
    summary.migrated_users = int(run.get("migrated_users") or 0)
    summary.failed_users = int(run.get("failed_migrations") or 0)
    started_at = run.get("started_at")
    if started_at:
        try:
            began = datetime.fromisoformat(str(started_at).replace("Z", "+00:00"))
            summary.started = time.monotonic() - max(0.0, (datetime.now(UTC) - began).total_seconds())
        except ValueError:
            pass
    return summary


def watch(client: ApiClient, run_id: str | None, interval: float = 1.0, stream: TextIO | None = None,
          sleep: Callable[[float], None] = time.sleep) -> Response:
    """Poll /progress for the run and draw the progress bar until its status is not RUNNING."""
    from tokenmigration.cli.progress import ProgressBar

    bar = ProgressBar(stream=stream or sys.stderr)
    try:
        while True:
            response = client.request("GET", "/progress", query={"migration_id": run_id})
            if not response.ok:
                return response
            run = (response.document or {}).get("progress") or {}
            if run.get("total_users"):
                bar(_summary_from_progress(run))
            if run.get("status") != "RUNNING":
                return response
            sleep(interval)
    finally:
        bar.close()


def _finished_run_exit(response: Response) -> int:
    run = (response.document or {}).get("progress") or {}
    if run.get("status") not in (None, "SUCCEEDED"):
        print("\n".join(f"tokenmigration api: {line}" if n == 0 else line
                        for n, line in enumerate(failure_lines(run))), file=sys.stderr)
        return EXIT_FAILED
    if run.get("failed_migrations"):
        print(f"tokenmigration api: {run['failed_migrations']:,} user(s) failed; `tokenmigration api errors` lists "
              "them, and a new run retries them", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_api(args, settings=None, client: ApiClient | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        client = client or ApiClient(args.endpoint or os.environ.get("TOKENMIGRATION_API_URL", ""),
                                     region=args.region)
        return _run(args, client, out)
    except ApiUsageError as exc:
        print(f"tokenmigration api: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args, client: ApiClient, out: TextIO) -> int:
    verb = args.api_command
    as_json = args.json
    where = client.base
    if verb == "start":
        if not args.dry_run:
            confirm(f"Start a migration of every user through {where}?", args.yes)
        body: dict[str, Any] = {"confirm": True, "dry_run": bool(args.dry_run)}
        if args.chunk_size:
            body["chunk_size"] = args.chunk_size
        if args.max_concurrency:
            body["max_concurrency"] = args.max_concurrency
        response = client.request("POST", "/start", body)
        if not response.ok:
            return _refused(response, as_json, out)
        if args.watch:
            return _watched(client, response.document.get("migration_id"), args, out, started=response)
        _emit(response, as_json, out, _summary(response))
        return EXIT_OK
    if verb == "progress":
        if args.watch:
            return _watched(client, args.run_id, args, out)
        response = client.request("GET", "/progress", query={"migration_id": args.run_id})
        if not response.ok:
            return _refused(response, as_json, out)
        _emit(response, as_json, out, progress_table(response.document))
        return EXIT_OK
    if verb == "complete":
        confirm(f"Switch the application to Sanctum only through {where}? Rollback stops being available.",
                args.yes)
        return _simple(client.request("POST", "/complete", {"confirm": True}), as_json, out)
    if verb == "rollback":
        confirm(f"Remove every token and session the tool created, for every user, through {where}?", args.yes)
        response = client.request("POST", "/rollback", {"confirm": True})
        if response.ok and args.watch:
            return _watched(client, response.document.get("rollback_id"), args, out, started=response)
        return _simple(response, as_json, out)
    if verb == "stats":
        response = client.request("GET", "/stats")
        if not response.ok:
            return _refused(response, as_json, out)
        _emit(response, as_json, out, stats_table(response.document))
        return EXIT_OK
    if verb == "cleanup":
        return _simple(_cleanup(client, bool(args.dry_run)), as_json, out)
    if verb == "errors":
        response = client.request("GET", "/errors", query={"migration_id": args.run_id, "limit": args.limit,
                                                           "cursor": args.cursor})
        if not response.ok:
            return _refused(response, as_json, out)
        doc = response.document
        rows = [(_cell(e.get("user_id")), _cell(e.get("session_id")), e.get("code"), e.get("message"))
                for e in doc.get("errors") or []]
        if not rows:
            count = "no problems"
        elif doc.get("next_cursor") or args.cursor:
            count = f"{len(rows)} problem(s) on this page"
        else:
            count = f"{len(rows)} problem(s)"
        text = f"run {doc.get('migration_id') or '-'}: {count}"
        if rows:
            text += "\n" + table(rows, headers=("user", "session", "code", "message"))
        if doc.get("next_cursor"):
            text += f"\nmore: --cursor {doc['next_cursor']}"
        _emit(response, as_json, out, text)
        return EXIT_OK
    if verb == "migrate-user":
        return _simple(client.request("POST", f"/user/{args.user_id}"), as_json, out)
    if verb == "rollback-user":
        return _simple(client.request("POST", f"/user/{args.user_id}/rollback"), as_json, out)
    if verb == "bridge":
        cookie = sys.stdin.readline().strip() if args.cookie == "-" else args.cookie
        return _simple(client.bridge(cookie, args.client_ip), as_json, out)
    raise AssertionError(verb)


def _emit(response: Response, as_json: bool, out: TextIO, text: str) -> None:
    if as_json:
        _print_json(response.document, out)
    else:
        out.write(text + "\n")


def _simple(response: Response, as_json: bool, out: TextIO) -> int:
    if not response.ok:
        return _refused(response, as_json, out)
    _emit(response, as_json, out, _summary(response))
    return EXIT_OK


def _cleanup(client: ApiClient, dry_run: bool) -> Response:
    """POST /cleanup until the walk is complete (each call stops at API Gateway's time limit and says where to go
    on); one answer that adds up every call's counts, or the first refusal."""
    body: dict[str, Any] = {"dry_run": dry_run}
    calls: list[dict[str, Any]] = []
    while True:
        response = client.request("POST", "/cleanup", body)
        if not response.ok or not isinstance(response.document, dict):
            if calls:  # the pages of the calls that answered are committed: say how far it got
                done = sum(int(doc.get("cleaned_items") or 0) for doc in calls)
                print(f"tokenmigration api: cleanup stopped after {len(calls)} call(s) that "
                      f"{'would remove' if dry_run else 'removed'} {done} items, up to user "
                      f"{body['after_user_id']}; run it again to go on", file=sys.stderr)
            return response
        calls.append(response.document)
        resume = response.document.get("resume_after_user_id")
        if response.document.get("complete", True) or resume is None:
            break
        body = {"dry_run": dry_run, "after_user_id": resume}
    if len(calls) == 1:
        return response
    details: dict[str, int] = {}
    for doc in calls:
        for key, value in (doc.get("details") or {}).items():
            details[key] = details.get(key, 0) + int(value)
    total = sum(int(doc.get("cleaned_items") or 0) for doc in calls)
    verb = "would remove" if dry_run else "removed"
    document = {**response.document, "cleaned_items": total, "details": details,
                "message": f"{'Dry run: cleanup' if dry_run else 'Cleanup'} {verb} {total} items in {len(calls)} calls"}
    return Response(response.status, document, json.dumps(document))


def _watched(client: ApiClient, run_id: str | None, args, out: TextIO, started: Response | None = None) -> int:
    if started is not None and not args.json:
        out.write(_summary(started) + "\n")
        out.flush()
    try:
        response = watch(client, run_id, interval=args.interval)
    except KeyboardInterrupt:
        # Only the watching stops: the run goes on in the cloud (or the local twin).
        which = f" --id {run_id}" if run_id else ""
        print(f"\ntokenmigration api: stopped watching; run {run_id or '(latest)'} goes on. Follow it again with "
              f"`tokenmigration api progress{which} --watch`", file=sys.stderr)
        return 130
    if not response.ok:
        return _refused(response, args.json, out)
    _emit(response, args.json, out, progress_table(response.document))
    return _finished_run_exit(response)
