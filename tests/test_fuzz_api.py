"""Fuzzing the API: schemathesis generates requests from docs/openapi.json and sends them, SigV4-signed, to the
local twin (template routes, the real handlers, moto's state machines, the test PostgreSQL and Redis).

Every answer must be no 5xx, a status the document declares for that operation, JSON, and a body matching the
declared schema. Bounded: a fixed number of examples per operation and no per-example deadline (the machine is
shared); the run is derandomized so CI sees the same requests every time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import schemathesis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.checks import response_headers_conformance

from helpers import add_users, express, put_session, reset_database

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
KEY, SECRET, REGION = "AKIAFUZZTESTKEY00001", "fuzz-test-secret-access-key", "us-east-1"
EXAMPLES = 25  # per operation

schema = schemathesis.openapi.from_path(DOCUMENT)
# Valid requests and invalid ones (wrong types, missing fields, out-of-range values): neither may get a 5xx.
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


class SigV4(requests.auth.AuthBase):
    """Signs as the operator's client does (service execute-api), with the twin's key pair."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        signed = AWSRequest(method=request.method, url=request.url, data=request.body or b"",
                            headers={k: v for k, v in request.headers.items() if k.lower() != "connection"})
        SigV4Auth(BotoCredentials(KEY, SECRET), "execute-api", REGION).add_auth(signed)
        request.headers.update(dict(signed.headers.items()))
        return request


@pytest.fixture(scope="module")
def twin_url(_pg_engine, redis_url):
    """One twin for the whole module, on a database holding a few users and sessions for the routes to find."""
    import redis as redis_lib

    from tokenmigration.local.server import Credentials, start_in_background
    from tokenmigration.local.twin import LocalTwin

    # Fresh tables, as the function-scoped pg_engine fixture makes them (a module-scoped fixture cannot use it,
    # and "import conftest" finds whichever conftest.py pytest loaded last).
    reset_database(_pg_engine)
    store = redis_lib.Redis.from_url(redis_url)
    store.flushdb()
    add_users(_pg_engine, list(range(1, 21)))
    for uid in (1, 2, 3):
        put_session(store, f"fuzz-{uid}", express(uid))
    twin = LocalTwin(database_url=_pg_engine.url.render_as_string(hide_password=False), redis_url=redis_url,
                     region=REGION, log_level="CRITICAL",
                     extra_env={"FLAGS_MAX_AGE_SECONDS": "0", "MIGRATION_LOCK_TIMEOUT_MS": "200",
                                "POWERTOOLS_METRICS_DISABLED": "true"})
    running = start_in_background(twin, Credentials(KEY, SECRET, REGION))
    try:
        yield running.url
    finally:
        running.stop()
        store.flushdb()
        store.close()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_every_documented_route_answers_as_documented(case, twin_url):
    case.call_and_validate(base_url=twin_url, auth=SigV4(), checks=CHECKS, timeout=60)
