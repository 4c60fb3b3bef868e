"""The plan of the migration state machine, in three phases (``phase`` in the step's input).

- ``chunks`` (the default): ``{"run_id", "chunk_size"}`` -> ``{"chunks": {"Bucket", "Key"}, "total_users",
  "total_batches", "nodes"}``: chunk the users, store the chunk list, name the Redis nodes to scan.
- ``slice``: ``{"run_id", "node", "node_index", "cursor", "slice", "report"}`` -> the same fields for the next
  slice, and ``done``: scan one node for a bounded time; the state machine loops until ``done``.
- ``finish``: ``{"run_id", "reports": [...]}`` -> ``{"chunks", "total_users", "total_batches"}``: the index is
  complete; the Distributed Map reads its items from ``chunks``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenmigration.aws.context import services
from tokenmigration.engine.session_index import SliceCounts
from tokenmigration.tracing import LazyTracer
from tokenmigration.workflow import fields, steps
from tokenmigration.workflow.errors import InvalidStepInput

logger = Logger()
tracer = LazyTracer()  # the X-Ray SDK only when tracing is on (tokenmigration.tracing)
metrics = Metrics()

# A slice stops starting SCAN calls this long before Lambda would stop it: the last call's batch still
# has to be read and filed.
SAFETY_SECONDS = 60


def _counts(value: Any, name: str) -> SliceCounts:
    if value is not None and not isinstance(value, dict):
        raise InvalidStepInput(f"{name!r} must be a JSON object")
    try:
        return SliceCounts.from_dict(value)
    except (TypeError, ValueError) as error:
        raise InvalidStepInput(f"{name!r}: {error}") from None


def _cursor(event: dict[str, Any]) -> int:
    raw = fields.text(event, "cursor")
    if not raw.isdigit():
        raise InvalidStepInput("'cursor' must be a decimal SCAN cursor")
    return int(raw)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_id = fields.text(event, "run_id")
    phase = fields.text(event, "phase", "chunks")
    logger.append_keys(run_id=run_id, phase=phase)
    metrics.add_metadata(key="run_id", value=run_id)
    svc = services()

    if phase == "chunks":
        chunk_size = fields.integer(event, "chunk_size", minimum=1, maximum=10_000)
        start = steps.start_plan(svc, run_id, chunk_size)
        metrics.add_metric(name="UsersPlanned", unit=MetricUnit.Count, value=start.total_users)
        logger.info("chunks planned", extra={"total_users": start.total_users, "total_batches": start.total_batches,
                                             "nodes": len(start.nodes)})
        return {"chunks": start.chunks, "total_users": start.total_users, "total_batches": start.total_batches,
                "nodes": start.nodes}

    if phase == "slice":
        remaining = context.get_remaining_time_in_millis() / 1000 - SAFETY_SECONDS
        seconds = max(0.0, min(float(svc.aws.plan_slice_seconds), remaining))
        outcome = steps.plan_slice(
            svc, run_id, fields.text(event, "node"), fields.integer(event, "node_index", minimum=0, maximum=9_999),
            _cursor(event), fields.integer(event, "slice", minimum=0), _counts(event.get("report"), "report"),
            seconds,
        )
        return {"run_id": run_id, **outcome.to_dict()}

    if phase == "finish":
        reports = event.get("reports")  # one node's counts each: what its loop's last slice returned
        if not isinstance(reports, list) or not reports or not all(isinstance(r, dict) for r in reports):
            raise InvalidStepInput("'reports' must be a non-empty list (one per scanned node)")
        counts = [_counts(item, "reports[]") for item in reports]
        outcome = steps.finish_plan(svc, run_id, counts)
        logger.info("planned", extra={"total_users": outcome.total_users, "total_batches": outcome.total_batches,
                                      "plan_problems": outcome.plan_problems})
        return {"chunks": outcome.chunks, "total_users": outcome.total_users,
                "total_batches": outcome.total_batches}

    raise InvalidStepInput(f"'phase' must be chunks, slice or finish, got {phase!r}")
