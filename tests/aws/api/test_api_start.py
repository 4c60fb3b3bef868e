"""POST /auth/migration/start: the lock decides, the execution is named after the run, a failed start
leaves nothing behind."""

from __future__ import annotations

import copy
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import EndpointConnectionError

from tokenmigration.api import observability
from tokenmigration.aws.context import reset_services, services


def test_start_is_accepted_and_names_the_execution_after_the_run(api, stack):
    result = api.invoke("api_start", body={"confirm": True})

    assert result.status == 202
    body = result.body
    assert set(body) == {"success", "message", "migration_id", "execution_arn", "dry_run"}
    assert body["success"] is True and body["dry_run"] is False and body["message"]
    run_id = body["migration_id"]
    assert run_id.startswith("migration-")
    assert stack.ledger.active_run() == run_id

    [execution] = stack.executions()
    assert execution["name"] == run_id
    assert execution["executionArn"] == body["execution_arn"]
    assert json.loads(execution["input"]) == {"run_id": run_id, "kind": "migration", "dry_run": False,
                                              "chunk_size": 2000, "max_concurrency": 10}
    run = stack.ledger.get_run(run_id)
    assert run["status"] == "RUNNING" and run["kind"] == "migration"
    assert run["execution_arn"] == body["execution_arn"]
    assert stack.ledger.latest_run_id() == run_id


def test_start_passes_the_options_on(api, stack):
    result = api.invoke("api_start", body={"confirm": True, "dry_run": True, "chunk_size": 1, "max_concurrency": 1000})
    assert result.status == 202 and result.body["dry_run"] is True
    [execution] = stack.executions()
    assert json.loads(execution["input"]) == {"run_id": result.body["migration_id"], "kind": "migration",
                                              "dry_run": True, "chunk_size": 1, "max_concurrency": 1000}
    assert stack.ledger.get_run(result.body["migration_id"])["dry_run"] is True


def test_the_sample_event_starts_a_run(api, stack):
    result = api.invoke("api_start")
    assert result.status == 202
    run_id = result.body["migration_id"]
    assert stack.ledger.active_run() == run_id
    assert stack.ledger.get_run(run_id)["status"] == "RUNNING"
    [execution] = stack.executions()
    assert execution["name"] == run_id and json.loads(execution["input"])["run_id"] == run_id


@pytest.mark.parametrize(("body", "field"), [
    (None, "body"),
    ("", "body"),
    ({}, "confirm"),
    ({"confirm": False}, "confirm"),
    ({"confirm": "true"}, "confirm"),
    ({"confirm": 1}, "confirm"),
    ({"confirm": None}, "confirm"),
    ({"dry_run": True}, "confirm"),
    ({"confirm": True, "chunk_size": 0}, "chunk_size"),
    ({"confirm": True, "chunk_size": 10001}, "chunk_size"),
    ({"confirm": True, "chunk_size": "500"}, "chunk_size"),
    ({"confirm": True, "chunk_size": 5.5}, "chunk_size"),
    ({"confirm": True, "chunk_size": 500.0}, "chunk_size"),
    ({"confirm": True, "chunk_size": True}, "chunk_size"),
    ({"confirm": True, "max_concurrency": 0}, "max_concurrency"),
    ({"confirm": True, "max_concurrency": 1001}, "max_concurrency"),
    ({"confirm": True, "max_concurrency": -3}, "max_concurrency"),
    ({"confirm": True, "dry_run": "yes"}, "dry_run"),
    ({"confirm": True, "dry_run": 1}, "dry_run"),
    ({"confirm": True, "dryrun": True}, "dryrun"),
    ([{"confirm": True}], "body"),
    ("true", "body"),
    ('{"confirm": true', "body"),
    ("{'confirm': True}", "body"),
])
def test_invalid_bodies_are_400_and_start_nothing(api, stack, body, field):
    result = api.invoke("api_start", body=body)

    assert result.status == 400, result.body
    assert result.body["success"] is False and result.body["message"]
    assert field in result.body["errors"], result.body
    assert all(isinstance(m, str) and m for msgs in result.body["errors"].values() for m in msgs)
    assert stack.ledger.active_run() is None
    assert stack.ledger.latest_run_id() is None
    assert stack.executions() == []


def test_missing_confirm_names_the_field(api, stack):
    result = api.invoke("api_start", body={})
    assert result.body["errors"] == {"confirm": ["is required"]}
    result = api.invoke("api_start", body={"confirm": False, "chunk_size": 0})
    assert result.body["errors"] == {"confirm": ["must be true"],
                                     "chunk_size": ["Input should be greater than or equal to 1"]}
    assert result.body["message"] == "The request is invalid: confirm must be true (and 1 more error)"


def test_only_json_bodies_are_read(api, stack):
    form = api.invoke("api_start", body="confirm=true",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    # curl -d '{"confirm": true}' sends JSON as form-encoded: say what is wrong, not "confirm is required".
    curl = api.invoke("api_start", body='{"confirm": true}',
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    text = api.invoke("api_start", body='{"confirm": true}', headers={"Content-Type": "text/plain"})
    for result in (form, curl, text):
        assert result.status == 400
        assert result.body["errors"] == {"body": ["must be sent as application/json"]}
    charset = api.invoke("api_start", body='{"confirm": true}',
                         headers={"Content-Type": "application/json; charset=utf-8"})
    assert charset.status == 202
    assert stack.ledger.active_run() == charset.body["migration_id"]


def test_no_content_type_is_read_as_json(api, stack):
    assert api.invoke("api_start", body='{"confirm": true}', drop_headers=("Content-Type",)).status == 202


def test_a_second_start_is_409_with_the_active_run(api, stack):
    first = api.invoke("api_start", body={"confirm": True})
    second = api.invoke("api_start", body={"confirm": True, "dry_run": True})

    assert second.status == 409
    assert second.body == {"success": False, "message": f"A run is in progress: {first.body['migration_id']}",
                           "migration_id": first.body["migration_id"]}
    assert first.body["migration_id"] in second.body["message"]
    assert len(stack.executions()) == 1


def test_start_is_refused_while_a_rollback_runs(api, stack):
    stack.ledger.acquire_lock("rollback-20250301T120000Z-00000000", "rollback")
    result = api.invoke("api_start", body={"confirm": True})
    assert result.status == 409 and result.body["migration_id"] == "rollback-20250301T120000Z-00000000"


def test_start_is_accepted_again_once_the_run_released_the_lock(api, stack):
    first = api.invoke("api_start", body={"confirm": True}).body["migration_id"]
    stack.ledger.finish_run(first, "SUCCEEDED")
    stack.ledger.release_lock(first)  # what the state machine's finalize step does
    second = api.invoke("api_start", body={"confirm": True})
    assert second.status == 202 and second.body["migration_id"] != first


@pytest.fixture
def serialized_metrics(monkeypatch):
    """Powertools keeps one metric set per process (one Lambda invocation at a time). Threads that stand in
    for concurrent containers share it, so their flushes must not interleave with each other's adds."""
    provider = observability.metrics.provider
    lock = threading.Lock()
    add, flush = provider.add_metric, provider.flush_metrics

    def locked(fn):
        def call(*args, **kwargs):
            with lock:
                return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(provider, "add_metric", locked(add))
    monkeypatch.setattr(provider, "flush_metrics", locked(flush))


def test_eight_simultaneous_starts_one_202_seven_409(api, warm, serialized_metrics):
    # Eight containers: each its own copy of the function module (its own resolver), as Lambda would run them.
    containers = [api.load_handler("api_start", f"api_start_container_{n}") for n in range(8)]
    event = api.event("api_start", body={"confirm": True})
    barrier = threading.Barrier(len(containers))

    def start(module):
        barrier.wait()
        return api.invoke("api_start", copy.deepcopy(event), module=module)

    with ThreadPoolExecutor(max_workers=len(containers)) as pool:
        results = list(pool.map(start, containers))

    accepted = [r for r in results if r.status == 202]
    refused = [r for r in results if r.status == 409]
    assert len(accepted) == 1 and len(refused) == 7, [(r.status, r.body) for r in results]
    winner = accepted[0].body["migration_id"]
    assert {r.body["migration_id"] for r in refused} == {winner}
    assert all(r.body["success"] is False for r in refused)
    assert warm.ledger.active_run() == winner
    assert [e["name"] for e in warm.executions()] == [winner]
    # The losers left no run behind.
    assert warm.ledger.latest_run_id() == winner


def test_a_failed_start_execution_releases_the_lock(api, stack, monkeypatch, logs):
    monkeypatch.setenv("MIGRATION_STATE_MACHINE_ARN", stack.migration_arn + "-gone")
    reset_services()

    result = api.invoke("api_start", body={"confirm": True})

    assert result.status == 503
    assert result.body["success"] is False
    assert "StateMachineDoesNotExist" in result.body["message"]
    assert "Traceback" not in result.text
    run_id = result.body["migration_id"]
    assert stack.ledger.active_run() is None
    run = stack.ledger.get_run(run_id)
    assert run["status"] == "FAILED" and "StartExecution" in run["error"]
    [entry] = logs.audit()
    assert entry["outcome"] == "failed" and entry["status"] == 503 and entry["error"] == "execution_not_started"

    monkeypatch.setenv("MIGRATION_STATE_MACHINE_ARN", stack.migration_arn)
    reset_services()
    again = api.invoke("api_start", body={"confirm": True})
    assert again.status == 202 and stack.ledger.active_run() == again.body["migration_id"]


def test_an_unreachable_step_functions_releases_the_lock(api, warm, monkeypatch):
    def unreachable(**_):
        raise EndpointConnectionError(endpoint_url="https://states.us-east-1.amazonaws.com")

    monkeypatch.setattr(services().stepfunctions, "start_execution", unreachable)
    result = api.invoke("api_start", body={"confirm": True})
    assert result.status == 503 and "EndpointConnectionError" in result.body["message"]
    assert warm.ledger.active_run() is None


def test_an_unexpected_error_after_the_lock_releases_it_and_says_nothing(api, warm, monkeypatch, logs):
    def broken(**_):
        raise RuntimeError("password=hunter2 in a driver message")

    monkeypatch.setattr(services().stepfunctions, "start_execution", broken)
    result = api.invoke("api_start", body={"confirm": True})

    assert result.status == 500
    assert result.body == {"success": False, "message": "internal error"}
    assert warm.ledger.active_run() is None
    # The details are in the log only.
    assert "hunter2" in logs.text


def test_max_concurrency_above_the_chunk_functions_reserved_concurrency_is_400(api, stack, monkeypatch):
    # The template sets MAX_CONCURRENCY_LIMIT from ChunkReservedConcurrency on /start (and /rollback, whose
    # body takes no max_concurrency: it runs with the default, which the template keeps within the budget).
    route = "api_start"
    monkeypatch.setenv("MAX_CONCURRENCY_LIMIT", "8")
    reset_services()

    result = api.invoke(route, body={"confirm": True, "max_concurrency": 9})

    assert result.status == 400, result.body
    assert result.body["success"] is False
    [message] = result.body["errors"]["max_concurrency"]
    assert "at most 8" in message and "ChunkReservedConcurrency" in message
    assert stack.ledger.active_run() is None and stack.executions() == []
    assert api.invoke(route, body={"confirm": True, "max_concurrency": 8}).status == 202
