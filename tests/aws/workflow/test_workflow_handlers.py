"""Every workflow function on its sample event (events/<function>.json), through the in-process Lambda of
``aws_stack``; and the sample events are what the state machines actually send."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stack import ROOT, AwsStack, load_event

from helpers import add_users, cleanup_fails_from_user, ledgered_token_rows
from tokenmigration.aws.context import services
from tokenmigration.workflow.errors import InvalidStepInput

OWNED = ("wf_plan", "wf_migrate_chunk", "wf_rollback_plan", "wf_rollback_chunk", "wf_finalize", "wf_mark_failed",
         "scheduled_cleanup")


def start_run(stack: AwsStack, event: dict) -> str:
    """The run and the lock, as the API creates them before StartExecution."""
    run_id = event["run_id"]
    kind = event.get("kind") or run_id.split("-", 1)[0]
    stack.ledger.acquire_lock(run_id, kind)
    stack.ledger.create_run(run_id, kind, event.get("dry_run", False))
    return run_id


def test_every_workflow_function_has_a_sample_event():
    folders = sorted(p.name for p in (ROOT / "functions").iterdir() if p.name.startswith(("wf_", "scheduled_")))
    assert folders == sorted(OWNED)
    for name in OWNED:
        assert isinstance(load_event(name), dict), name


def test_plan_on_its_sample_event(aws_stack, pg_engine, redis_client):
    event = load_event("wf_plan")
    run_id = start_run(aws_stack, event)
    add_users(pg_engine, [1, 2, 3])

    result = aws_stack.invoke("wf_plan", event)

    assert result == {"chunks": {"Bucket": aws_stack.bucket, "Key": f"runs/{run_id}/chunks.json"},
                      "total_users": 3, "total_batches": 1, "nodes": ["single"]}
    listed = json.loads(aws_stack.s3.get_object(**result["chunks"])["Body"].read())
    assert listed == [{"number": 0, "lo": 1, "hi": 3, "users": 3}]
    run = aws_stack.ledger.get_run(run_id)
    assert (run["total_users"], run["total_batches"]) == (3, 1)


def test_plan_slice_and_finish_on_their_sample_events(aws_stack, pg_engine, redis_client):
    run_id = start_run(aws_stack, load_event("wf_plan"))
    add_users(pg_engine, [1, 2, 3])
    aws_stack.invoke("wf_plan", load_event("wf_plan"))
    store = services().migrator.index_store(run_id)
    assert not store.is_complete()

    sliced = aws_stack.invoke("wf_plan", load_event("wf_plan_slice"))
    # An empty store: one SCAN call returns cursor 0, so the node is done in its first slice.
    assert sliced == {"run_id": run_id, "node": "single", "node_index": 0, "cursor": "0", "slice": 1,
                      "report": {"keys_seen": 0, "kinds": {}, "problems": 0}, "done": True}
    finished = aws_stack.invoke("wf_plan", load_event("wf_plan_finish"))
    assert finished == {"chunks": {"Bucket": aws_stack.bucket, "Key": f"runs/{run_id}/chunks.json"},
                        "total_users": 3, "total_batches": 1}
    assert store.is_complete()


def test_plan_of_a_run_nobody_created_fails_before_scanning(aws_stack, pg_engine):
    from tokenmigration.aws.errors import UnknownRun

    with pytest.raises(UnknownRun):
        aws_stack.invoke("wf_plan", load_event("wf_plan"))


def index_planned(run_id: str) -> None:
    """What a finished plan leaves behind: a complete session index (empty here: no sessions)."""
    services().migrator.index_store(run_id).mark_complete(0)


def test_migrate_chunk_on_its_sample_event_counts_once(aws_stack, pg_engine, redis_client):
    event = load_event("wf_migrate_chunk")
    start_run(aws_stack, {**event, "kind": "migration"})
    index_planned(event["run_id"])
    add_users(pg_engine, [1, 2, 3, 5998, 5999])  # 5999 is outside the chunk

    first = aws_stack.invoke("wf_migrate_chunk", event)
    again = aws_stack.invoke("wf_migrate_chunk", event)

    assert first == {"chunk": 0, "counted": True, "processed_users": 4, "migrated_users": 4, "skipped_users": 0,
                     "failed_users": 0, "sessions_migrated": 0}
    assert again == {**first, "counted": False}
    run = aws_stack.ledger.get_run(event["run_id"])
    assert (run["processed_users"], run["migrated_users"], run["current_batch"]) == (4, 4, 1)


def test_rollback_plan_and_chunk_on_their_sample_events(aws_stack, pg_engine, redis_client):
    migration = load_event("wf_migrate_chunk")
    start_run(aws_stack, {**migration, "kind": "migration"})
    index_planned(migration["run_id"])
    add_users(pg_engine, [1, 2, 3])
    aws_stack.invoke("wf_migrate_chunk", migration)
    aws_stack.ledger.release_lock(migration["run_id"])

    plan = load_event("wf_rollback_plan")
    run_id = start_run(aws_stack, plan)
    assert aws_stack.invoke("wf_rollback_plan", plan) == {
        "chunks": {"Bucket": aws_stack.bucket, "Key": f"runs/{run_id}/chunks.json"},
        "total_users": 3, "total_batches": 1}

    chunk = load_event("wf_rollback_chunk")
    assert chunk["run_id"] == run_id
    assert aws_stack.invoke("wf_rollback_chunk", chunk) == {"chunk": 0, "counted": True, "users": 3,
                                                           "tokens_revoked": 3, "sessions_removed": 0}
    run = aws_stack.ledger.get_run(run_id)
    assert (run["processed_users"], run["rolled_back_users"], run["tokens_revoked"]) == (2000, 3, 3)


def test_finalize_on_its_sample_event(aws_stack, pg_engine, redis_client):
    event = load_event("wf_finalize")
    run_id = start_run(aws_stack, event)

    progress = aws_stack.invoke("wf_finalize", event)

    assert progress["migration_id"] == run_id and progress["status"] == "SUCCEEDED"
    assert aws_stack.ledger.active_run() is None
    assert aws_stack.flag_values()["rollback_available"] == "true"
    # Run again (a retry after it finished): nothing changes, nothing fails.
    assert aws_stack.invoke("wf_finalize", event)["status"] == "SUCCEEDED"


def test_finalize_refuses_a_run_with_uncounted_chunks(aws_stack, pg_engine, redis_client):
    from tokenmigration.workflow.steps import RunIncomplete

    event = load_event("wf_finalize")
    run_id = start_run(aws_stack, event)
    aws_stack.ledger.set_plan(run_id, total_users=10, total_batches=2)

    with pytest.raises(RunIncomplete, match="0 of 2 chunks"):
        aws_stack.invoke("wf_finalize", event)
    assert aws_stack.ledger.get_run(run_id)["status"] == "RUNNING"
    assert aws_stack.ledger.active_run() == run_id


def test_finalize_of_a_rollback_sets_the_flags_of_api_md(aws_stack, pg_engine, redis_client):
    aws_stack.flags.set(auth_mode="sanctum", sanctum_only=True, rollback_available=True)
    event = {"run_id": "rollback-20250301T130000Z-4e5f6a7b", "kind": "rollback", "dry_run": False}
    start_run(aws_stack, event)

    aws_stack.invoke("wf_finalize", event)

    assert aws_stack.flag_values() == {"auth_mode": "dual", "sanctum_only": "false", "rollback_available": "false",
                                       "exchange_enabled": "true"}


def test_mark_failed_on_its_sample_event(aws_stack, pg_engine, redis_client):
    event = load_event("wf_mark_failed")
    run_id = start_run(aws_stack, event)

    result = aws_stack.invoke("wf_mark_failed", event)

    short = "TransientDatabaseError: the database failed transiently: InterfaceError"
    assert result == {"run_id": run_id, "status": "FAILED", "error": short, "ended_here": True,
                      "lock_released": True}
    run = aws_stack.ledger.get_run(run_id)
    assert (run["status"], run["error"]) == ("FAILED", short)
    assert aws_stack.flag_values()["rollback_available"] == "true"
    # A second report (the execution-status rule after the Catch) changes nothing.
    assert aws_stack.invoke("wf_mark_failed", event) == {**result, "ended_here": False, "lock_released": False}


def test_a_stopped_execution_is_recorded_through_the_status_rule(aws_stack, pg_engine, redis_client):
    event = load_event("wf_mark_failed_execution_status")
    run_id = start_run(aws_stack, {"run_id": event["detail"]["name"], "kind": "migration"})

    result = aws_stack.invoke("wf_mark_failed", event)

    assert result == {"run_id": run_id, "status": "ABORTED", "error": "ExecutionAborted", "ended_here": True,
                      "lock_released": True}
    assert aws_stack.ledger.active_run() is None


def test_a_failed_rollback_keeps_rollback_available(aws_stack, pg_engine, redis_client):
    aws_stack.flags.set(rollback_available=True)
    event = {**load_event("wf_mark_failed"), "run_id": "rollback-20250301T130000Z-4e5f6a7b", "kind": "rollback"}
    start_run(aws_stack, event)

    aws_stack.invoke("wf_mark_failed", event)

    assert aws_stack.flag_values() == {"auth_mode": "dual", "sanctum_only": "false", "rollback_available": "true",
                                       "exchange_enabled": "true"}


def test_mark_failed_never_steals_another_runs_lock(aws_stack, pg_engine, redis_client):
    event = load_event("wf_mark_failed")
    start_run(aws_stack, event)
    aws_stack.ledger.finish_run(event["run_id"], "FAILED")
    aws_stack.ledger.release_lock(event["run_id"])
    aws_stack.ledger.acquire_lock("migration-20250302T080000Z-99999999", "migration")

    result = aws_stack.invoke("wf_mark_failed", event)

    assert (result["ended_here"], result["lock_released"]) == (False, False)
    assert aws_stack.ledger.active_run() == "migration-20250302T080000Z-99999999"


def test_scheduled_cleanup_on_its_sample_event(aws_stack, pg_engine, redis_client):
    result = aws_stack.invoke("scheduled_cleanup", load_event("scheduled_cleanup"))
    assert result["dry_run"] is False and result["cleaned_items"] == sum(result["details"].values()) == 0
    assert (result["complete"], result["resume_after_user_id"], result["started_after_user_id"]) == (True, None, None)


def test_scheduled_cleanup_goes_on_where_the_last_invocation_stopped(aws_stack, pg_engine, redis_client,
                                                                     monkeypatch):
    """A walk that outlasts one invocation (100 million users) stops a minute before the time limit, keeps its
    place in the run ledger's table, and the next scheduled invocation goes on from there."""
    import tokenmigration.engine.cleanup as cleanup_module
    import tokenmigration.workflow.steps as steps_module
    from tokenmigration.aws.cleanup_place import CleanupPlace
    from tokenmigration.db.schema import tokens

    add_users(pg_engine, [1, 2, 3, 4, 5])
    for uid in (1, 2, 3, 4, 5):
        services().migrator.migrate_user(uid, "run-1")
    with pg_engine.begin() as conn:  # the app deleted every token: five orphan ledger rows
        conn.execute(tokens.delete())
    monkeypatch.setattr(cleanup_module, "PAGE_USERS", 2)
    # FakeLambdaContext has 300 s left: with all of them kept in reserve, each invocation does one page
    monkeypatch.setattr(steps_module, "CLEANUP_SAFETY_SECONDS", 300.0)
    place = CleanupPlace(aws_stack.ledger.client, aws_stack.ledger.table_name)

    dry = aws_stack.invoke("scheduled_cleanup", {**load_event("scheduled_cleanup"), "dry_run": True})
    assert (dry["complete"], dry["resume_after_user_id"], place.get()) == (False, 2, None)  # a dry run keeps no place

    reports = []
    while not reports or not reports[-1]["complete"]:
        reports.append(aws_stack.invoke("scheduled_cleanup", load_event("scheduled_cleanup")))
        if not reports[-1]["complete"]:
            assert place.get() == reports[-1]["resume_after_user_id"]
    assert [(r["started_after_user_id"], r["resume_after_user_id"]) for r in reports] == [
        (None, 2), (2, 4), (4, None)]
    assert [r["details"]["ledger_rows"] for r in reports] == [2, 2, 1]
    assert place.get() is None  # the walk is complete: the next one starts from the first user
    with pg_engine.connect() as conn:
        assert ledgered_token_rows(conn) == []


@pytest.mark.parametrize(("function", "change"), [
    ("wf_plan", {"chunk_size": 0}),
    ("wf_plan", {"chunk_size": True}),
    ("wf_plan", {"run_id": ""}),
    ("wf_plan", {"phase": "everything"}),
    ("wf_plan_slice", {"cursor": "-1"}),
    ("wf_plan_slice", {"cursor": 5}),
    ("wf_plan_slice", {"report": {"kinds": {"logged_in": "many"}}}),
    ("wf_plan_finish", {"reports": []}),
    ("wf_migrate_chunk", {"chunk": {"number": 0}}),
    ("wf_migrate_chunk", {"dry_run": "false"}),
    ("wf_finalize", {"kind": "upgrade"}),
    ("wf_mark_failed", {"kind": None}),
])
def test_a_malformed_step_input_is_a_named_error(aws_stack, function, change):
    with pytest.raises(InvalidStepInput):
        aws_stack.invoke(function.removesuffix("_slice").removesuffix("_finish"), {**load_event(function), **change})


# --- the sample events are the shapes the state machines send -------------------------------------------------


def _tasks(states: dict) -> dict[str, dict]:
    found = {}
    for name, state in states.items():
        if state["Type"] == "Task":
            found[name] = state
        if state["Type"] == "Map":
            found.update(_tasks(state["ItemProcessor"]["States"]))
            found[name] = state
    return found


def _keys(template: dict) -> set[str]:
    return {key.removesuffix(".$") for key in template}


@pytest.mark.parametrize("machine", ["migration", "rollback"])
def test_each_task_sends_what_its_sample_event_holds(aws_stack, machine):
    definition = json.loads((ROOT / "statemachine" / f"{machine}.asl.json").read_text())
    substitutions = aws_stack.template["Resources"][f"{machine.title()}StateMachine"]["Properties"][
        "DefinitionSubstitutions"]
    folder_of = {f"${{{key}}}": aws_stack.function(value["Fn::GetAtt"][0]).folder
                 for key, value in substitutions.items() if "Fn::GetAtt" in value}
    execution_input = {"run_id", "kind", "dry_run", "chunk_size", "max_concurrency"}
    for name, state in _tasks(definition["States"]).items():
        if state["Type"] == "Map":
            first = state["ItemProcessor"]["States"][state["ItemProcessor"]["StartAt"]]
            sample = _sample(folder_of[first["Parameters"]["FunctionName"]], first["Parameters"].get("Payload"))
            assert _keys(state["ItemSelector"]) == set(sample) - {"phase"}, name
            continue
        folder = folder_of[state["Parameters"]["FunctionName"]]
        payload = state["Parameters"].get("Payload")
        if payload is None:  # "Payload.$": "$" - the map's item, checked above
            continue
        sample = _sample(folder, payload)
        assert _keys(payload) <= set(sample), (name, folder)
        if folder in ("wf_plan", "wf_rollback_plan") and payload.get("phase", "chunks") == "chunks":
            assert set(sample) - {"phase"} == execution_input


def _sample(folder: str, payload: dict | None) -> dict:
    """The sample event of a task: the plan's later phases have their own (events/wf_plan_<phase>.json)."""
    phase = (payload or {}).get("phase", "chunks")
    return load_event(folder if phase == "chunks" else f"{folder}_{phase}")


def test_the_sample_chunk_matches_the_chunk_list_format():
    from tokenmigration.engine.results import Chunk

    chunk = load_event("wf_migrate_chunk")["chunk"]
    assert Chunk.from_dict(chunk).to_dict() == chunk


def test_the_status_rule_sample_matches_the_template_pattern(aws_stack):
    rule = aws_stack.template["Resources"]["MarkFailedFunction"]["Properties"]["Events"]["ExecutionEnded"]
    pattern = rule["Properties"]["Pattern"]
    event = load_event("wf_mark_failed_execution_status")
    assert event["source"] in pattern["source"] and event["detail-type"] in pattern["detail-type"]
    assert event["detail"]["status"] in pattern["detail"]["status"]
    resolved = [arn["Fn::Sub"].replace("${AWS::Partition}", "aws").replace("${AWS::Region}", "us-east-1")
                .replace("${AWS::AccountId}", "123456789012").replace("${Stage}", "dev")
                for arn in pattern["detail"]["stateMachineArn"]]
    assert event["detail"]["stateMachineArn"] in resolved
    assert set(resolved) == set(aws_stack.state_machines.values())


def test_the_schedule_sends_the_sample_events_fields(aws_stack):
    schedule = aws_stack.template["Resources"]["ScheduledCleanupFunction"]["Properties"]["Events"]["Cleanup"]
    assert schedule["Type"] == "ScheduleV2"
    assert set(json.loads(schedule["Properties"]["Input"])) == set(load_event("scheduled_cleanup"))


def test_events_are_json_objects():
    for path in sorted(Path(ROOT / "events").glob("wf_*.json")):
        assert isinstance(json.loads(path.read_text()), dict), path


def test_a_scheduled_cleanup_that_dies_midway_keeps_the_place_of_its_last_committed_page(
        aws_stack, pg_engine, redis_client, monkeypatch):
    import tokenmigration.engine.cleanup as cleanup_module
    from tokenmigration.aws.cleanup_place import CleanupPlace
    from tokenmigration.db.schema import tokens

    add_users(pg_engine, [1, 2, 3, 4, 5])
    for uid in (1, 2, 3, 4, 5):
        services().migrator.migrate_user(uid, "run-1")
    with pg_engine.begin() as conn:
        conn.execute(tokens.delete())
    monkeypatch.setattr(cleanup_module, "PAGE_USERS", 2)
    real_page = cleanup_fails_from_user(monkeypatch, 3)  # dies on the second page
    with pytest.raises(RuntimeError, match="went away"):
        aws_stack.invoke("scheduled_cleanup", load_event("scheduled_cleanup"))
    place = CleanupPlace(aws_stack.ledger.client, aws_stack.ledger.table_name)
    assert place.get() == 2  # users 1-2 are done and committed: not walked again

    monkeypatch.setattr(cleanup_module, "_clean_page", real_page)
    report = aws_stack.invoke("scheduled_cleanup", load_event("scheduled_cleanup"))
    assert (report["started_after_user_id"], report["complete"], report["details"]["ledger_rows"]) == (2, True, 3)
    assert place.get() is None
    with pg_engine.connect() as conn:
        assert ledgered_token_rows(conn) == []
