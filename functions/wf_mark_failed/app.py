"""State "Record the failure" of both state machines, and the target of the execution-status rule.

Two inputs:
- from EventBridge, "Step Functions Execution Status Change" for FAILED / TIMED_OUT / ABORTED executions
  (the state machines catch nothing, so that a failed execution stays redrivable): the run id is the
  execution name, kind and dry_run come from the execution input; a report about an execution that is
  running again (redriven) is ignored;
- a direct invocation (an operator closing a run by hand): ``{"run_id", "kind", "dry_run",
  "error": {"Error", "Cause"}}``;
- ``{"release_lock": "<run id>"}``: an operator clearing a stuck lock (the status rule's event went to its
  dead-letter queue): refused while the run's execution is running (DescribeExecution), else the run is
  recorded as failed, stopped or timed out and the lock released.
Output: ``{"run_id", "status", "error", "ended_here", "lock_released"}``.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenmigration.aws.context import services
from tokenmigration.aws.runs import KINDS
from tokenmigration.tracing import LazyTracer
from tokenmigration.workflow import fields, steps
from tokenmigration.workflow.errors import InvalidStepInput

logger = Logger()
tracer = LazyTracer()  # the X-Ray SDK only when tracing is on (tokenmigration.tracing)
metrics = Metrics()

STATUS_CHANGE = "Step Functions Execution Status Change"
# The error name a run keeps when the execution ended without one (stopped, timed out).
_DEFAULT_ERRORS = {"FAILED": "ExecutionFailed", "TIMED_OUT": "States.Timeout", "ABORTED": "ExecutionAborted"}


def _parse(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("detail-type") == STATUS_CHANGE:
        detail = fields.mapping(event, "detail")
        try:
            execution_input = json.loads(fields.text(detail, "input"))
        except ValueError:
            raise InvalidStepInput("the execution input is not JSON") from None
        status = fields.choice(detail, "status", tuple(steps.FAILURE_STATUSES))
        return {
            "run_id": fields.text(detail, "name"),
            "kind": fields.choice(execution_input, "kind", KINDS),
            "dry_run": fields.boolean(execution_input, "dry_run", default=False),
            "error": fields.optional_text(detail, "error") or _DEFAULT_ERRORS[status],
            "cause": fields.optional_text(detail, "cause"),
            "execution_status": status,
            "execution_arn": fields.optional_text(detail, "executionArn"),
        }
    caught = fields.mapping(event, "error", default={})
    return {
        "run_id": fields.text(event, "run_id"),
        "kind": fields.choice(event, "kind", KINDS),
        "dry_run": fields.boolean(event, "dry_run", default=False),
        "error": fields.optional_text(caught, "Error"),
        "cause": fields.optional_text(caught, "Cause"),
        "execution_status": "FAILED",
    }


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "release_lock" in event:
        run_id = fields.text(event, "release_lock")
        logger.append_keys(run_id=run_id)
        outcome = steps.release_stuck_lock(services(), run_id)
        logger.warning("active-run lock released by an operator", extra=outcome.to_dict())
        return outcome.to_dict()
    request = _parse(event)
    logger.append_keys(run_id=request["run_id"], kind=request["kind"])

    outcome = steps.mark_failed(services(), **request)

    if outcome.ended_here:
        metrics.add_dimension(name="kind", value=request["kind"])
        metrics.add_metric(name="RunsFailed", unit=MetricUnit.Count, value=1)
    logger.info("run failure recorded", extra=outcome.to_dict())
    return outcome.to_dict()
