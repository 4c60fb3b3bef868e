"""``tokenmigration local serve``: the deployed application's API on this machine (tokenmigration.local)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

EXIT_OK, EXIT_USAGE = 0, 2
SWITCH_INTERVAL = 0.0005  # seconds


def add_parser(sub: argparse._SubParsersAction) -> None:
    local = sub.add_parser("local", help="the AWS application on this machine (moto, in-process handlers)")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="LOCAL_COMMAND")
    serve = local_sub.add_parser("serve", help="serve template.yaml's API over HTTP, SigV4 checked like API Gateway")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=3000, help="port (default 3000; 0 picks a free one)")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="the functions' log level (default: the template's LogLevel)")
    serve.add_argument("--quiet", action="store_true", help="no access log lines")


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {value}")
    return value


def check_settings(settings) -> None:
    """What the served API needs from the environment, checked before anything starts."""
    from tokenmigration.config import ConfigError

    if not settings.express_session_secrets:
        # Without the Express app's own secret no connect.sid cookie verifies: every exchange would be a 401.
        raise ConfigError("EXPRESS_SESSION_SECRETS must be set for local serve: your Express app's session "
                          "secret(s), comma-separated as in express-session's `secret` option; without it "
                          "every exchange answers 401")


def server_credentials():
    """The key pair requests must be signed with: the environment's, or a fresh random one."""
    from tokenmigration.local.server import Credentials
    from tokenmigration.local.twin import random_credentials

    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, region)
    key, secret = random_credentials()
    return Credentials(key, secret, region, generated=True)


def cmd_local(args, settings) -> int:
    from tokenmigration.local.server import PortInUse, bind
    from tokenmigration.local.twin import LocalTwin

    check_settings(settings)
    credentials = server_credentials()  # before moto replaces the environment's keys with its own
    twin = LocalTwin(log_level=args.log_level)
    try:
        server = bind(args.host, args.port, twin, credentials, quiet=args.quiet)
    except PortInUse as exc:
        print(f"tokenmigration: {exc} (is another server running? pass --port)", file=sys.stderr)
        return EXIT_USAGE
    def terminate(signum, frame):  # SIGTERM (docker stop, systemd) shuts down like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    # Request threads wait for the GIL behind the run's CPU-bound chunk work after every I/O: a shorter switch
    # interval (default 5 ms) hands it back sooner, so /progress and /exchange stay quick during a run.
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        twin.start()
        server.attach()
        _banner(server, twin, credentials, app_key_given=bool(settings.laravel_app_key))
        for line in unreachable(twin):
            print(f"tokenmigration local: WARNING: {line}", file=sys.stderr, flush=True)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("\ntokenmigration local: stopping (running executions are stopped)", file=sys.stderr)
    finally:
        server.server_close()
        twin.stop()
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def unreachable(twin) -> list[str]:
    """The database and Redis the served functions use, tried once at start-up: a run against an unreachable
    one fails, so say so now rather than only in a failed run."""
    from tokenmigration.aws.context import services
    from tokenmigration.cli.errors import describe
    from tokenmigration.redis_client import connect

    problems = []
    try:
        with services().engine.connect():
            pass
    except Exception as error:
        problems.append(f"{describe(error) or type(error).__name__}: every run will fail until it is reachable")
    try:
        connect(twin.redis_url).ping()
    except Exception as error:
        problems.append(f"{describe(error) or type(error).__name__}: every run and exchange will fail until it is "
                        "reachable")
    return problems


def _banner(server, twin, credentials, app_key_given: bool = True) -> None:
    deployment = twin.deployment
    lines = [
        f"tokenmigration local API: {server.url}  (routes under /auth/migration; Ctrl-C stops)",
        f"  database: {twin.database_label}",
        f"  redis:    {twin.redis_label}",
        f"  AWS:      moto in-process, region {credentials.region}; table {deployment.table_name}; "
        f"state machines {', '.join(sorted(deployment.state_machines))}",
        "  routes:",
    ]
    lines += [f"    {r.method:5} {r.resource}{'' if r.iam else '   (public)'}" for r in server.routes]
    if not app_key_given:
        lines.append("  LARAVEL_APP_KEY is not set: the exchange encrypts its Laravel session cookie with a random "
                     "key, which your Laravel app cannot read; set it to the app's APP_KEY")
    if credentials.generated:
        lines += [
            "  No AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set: requests must be signed with this generated pair:",
            f"    export AWS_ACCESS_KEY_ID={credentials.access_key}",
            f"    export AWS_SECRET_ACCESS_KEY={credentials.secret_key}",
            f"    export AWS_DEFAULT_REGION={credentials.region}",
        ]
    else:
        lines.append(f"  SigV4: requests signed with access key {credentials.access_key} (AWS_ACCESS_KEY_ID)")
    lines.append(f"    export TOKENMIGRATION_API_URL={server.url}")
    print("\n".join(lines), flush=True)
