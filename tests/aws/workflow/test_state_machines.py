"""The shape of statemachine/*.asl.json: what the issue requires of the definition we deploy (and moto runs)."""

from __future__ import annotations

import json

import pytest
from stack import ROOT

LAMBDA_SERVICE_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                         "Lambda.TooManyRequestsException"}
TRANSIENT = {"TransientDatabaseError", "TransientRedisError"}


def definition(machine: str) -> dict:
    return json.loads((ROOT / "statemachine" / f"{machine}.asl.json").read_text(encoding="utf-8"))


def the_map(states: dict) -> tuple[str, dict]:
    """The Distributed Map over the chunks (the migration also has an inline map over Redis nodes)."""
    (found,) = ((name, s) for name, s in states.items()
                if s["Type"] == "Map" and s["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED")
    return found


@pytest.mark.parametrize("machine", ["migration", "rollback"])
def test_the_map_is_distributed_over_the_plans_chunk_list(machine):
    states = definition(machine)["States"]
    name, state = the_map(states)
    processor = state["ItemProcessor"]
    # STANDARD children and no ItemBatcher: what AWS runs is what moto's interpreter can run.
    assert processor["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert "ItemBatcher" not in state and "Iterator" not in state
    reader = state["ItemReader"]
    assert reader["Resource"] == "arn:aws:states:::s3:getObject"
    assert reader["ReaderConfig"] == {"InputType": "JSON"}
    assert reader["Parameters"] == {"Bucket.$": "$.plan.chunks.Bucket", "Key.$": "$.plan.chunks.Key"}
    # MaxConcurrency from the start request; the item is the chunk, with the run's id (and dry_run).
    assert state["MaxConcurrencyPath"] == "$.max_concurrency" and "MaxConcurrency" not in state
    assert state["ItemSelector"]["chunk.$"] == "$$.Map.Item.Value"
    assert state["ItemSelector"]["run_id.$"] == "$.run_id"
    # Results go to S3, so the state's output stays small at 50,000 chunks.
    assert state["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
    # The plan's result feeds the map: Plan (-> index slices -> finish the plan) -> Map -> Finish.
    (plan,) = (s for s in states.values() if s.get("Next") == name)
    assert plan["ResultPath"] == "$.plan"
    assert states[state["Next"]]["End"] is True


def test_the_migration_plan_loops_bounded_slices_per_redis_node():
    states = definition("migration")["States"]
    start = states[definition("migration")["StartAt"]]
    assert start["Parameters"]["Payload"]["phase"] == "chunks"
    nodes = states[start["Next"]]
    # Inline: every node's loop runs at once, and its few states stay in this execution's history.
    assert nodes["Type"] == "Map" and nodes["ItemProcessor"]["ProcessorConfig"]["Mode"] == "INLINE"
    assert nodes["ItemsPath"] == "$.plan.nodes"
    assert nodes["ItemSelector"]["cursor"] == "0" and nodes["ItemSelector"]["slice"] == 0
    inner = nodes["ItemProcessor"]["States"]
    scan = inner[nodes["ItemProcessor"]["StartAt"]]
    assert scan["Parameters"]["Payload"]["phase"] == "slice"
    choice = inner[scan["Next"]]
    # Back to the same slice state until the node's cursor is done: the loop.
    assert choice["Type"] == "Choice" and choice["Choices"][0]["Next"] == nodes["ItemProcessor"]["StartAt"]
    finish = states[nodes["Next"]]
    assert finish["Parameters"]["Payload"] == {"phase": "finish", "run_id.$": "$.run_id", "reports.$": "$.index"}
    assert finish["ResultPath"] == "$.plan" and finish["Next"] == the_map(states)[0]


@pytest.mark.parametrize("machine", ["migration", "rollback"])
def test_every_lambda_task_retries_service_errors_and_transient_ones_with_full_jitter(machine):
    states = definition(machine)["States"]
    the_map(states)  # exactly one Distributed Map
    tasks = {name: s for name, s in _all_states(states) if s["Type"] == "Task"}
    # plan (chunks, slice, finish for a migration), the chunk, finish: failures go to the status rule
    assert len(tasks) == (5 if machine == "migration" else 3)
    for name, task in tasks.items():
        assert task["Resource"] == "arn:aws:states:::lambda:invoke", name
        assert task["Parameters"]["FunctionName"].startswith("${"), name  # DefinitionSubstitutions
        retried = {error for retrier in task["Retry"] for error in retrier["ErrorEquals"]}
        assert retried >= LAMBDA_SERVICE_ERRORS | TRANSIENT, name
        # a chunk's count in the run ledger can be turned away for now (contention on the run item)
        counts_a_chunk = task["Parameters"]["FunctionName"] in ("${MigrateChunkFunctionArn}",
                                                                "${RollbackChunkFunctionArn}")
        assert ("TransientLedgerError" in retried) == counts_a_chunk, name
        assert "States.ALL" not in retried, name  # a bug is reported, not retried
        for retrier in task["Retry"]:
            assert retrier["JitterStrategy"] == "FULL" and retrier["BackoffRate"] >= 2, name
            assert retrier["MaxDelaySeconds"] >= retrier["IntervalSeconds"] >= 1, name


def _all_states(states: dict):
    for name, state in states.items():
        yield name, state
        if "ItemProcessor" in state:
            yield from _all_states(state["ItemProcessor"]["States"])


@pytest.mark.parametrize("machine", ["migration", "rollback"])
def test_no_state_catches_so_a_failed_execution_can_be_redriven(machine):
    # Redrive continues from the state that failed; a caught error would leave only a Fail state to redo.
    for name, state in _all_states(definition(machine)["States"]):
        assert "Catch" not in state, name
        assert state["Type"] != "Fail", name


def test_the_status_rule_records_every_unsuccessful_ending_of_both_machines():
    from stack import load_template

    template = load_template()
    rules = [(logical_id, event["Properties"]["Pattern"])
             for logical_id, resource in template["Resources"].items()
             for event in (resource.get("Properties", {}).get("Events") or {}).values()
             if event.get("Type") == "EventBridgeRule"]
    (target, pattern), = rules
    assert template["Resources"][target]["Properties"]["CodeUri"] == "functions/wf_mark_failed/"
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail-type"] == ["Step Functions Execution Status Change"]
    assert sorted(pattern["detail"]["status"]) == ["ABORTED", "FAILED", "TIMED_OUT"]
    assert len(pattern["detail"]["stateMachineArn"]) == 2


@pytest.mark.parametrize("machine", ["migration", "rollback"])
def test_state_names_read_well_in_the_console(machine):
    doc = definition(machine)
    names = [name for name, _ in _all_states(doc["States"])]
    for name in names:
        assert name[0].isupper() and " " in name and len(name) <= 80, name
    assert doc["Comment"]


def test_finish_passes_the_kind_and_dry_run():
    migration = definition("migration")["States"]["Finish the run"]["Parameters"]["Payload"]
    assert migration == {"run_id.$": "$.run_id", "kind": "migration", "dry_run.$": "$.dry_run"}
    rollback = definition("rollback")["States"]["Finish the rollback"]["Parameters"]["Payload"]
    assert rollback == {"run_id.$": "$.run_id", "kind": "rollback", "dry_run": False}


def test_moto_accepts_both_definitions(aws_stack):
    # aws_stack created them from template.yaml; moto's parser rejects what it cannot run.
    for arn in aws_stack.state_machines.values():
        described = aws_stack.sfn.describe_state_machine(stateMachineArn=arn)
        assert "${" not in described["definition"]
        assert json.loads(described["definition"])["StartAt"]
