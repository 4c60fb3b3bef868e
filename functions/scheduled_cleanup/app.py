"""The EventBridge Scheduler target: prune expired migration tokens, stale migrated sessions, orphan ledger rows.

Input: the schedule's Input, ``{"dry_run": false, "scheduled_time": "<aws.scheduler.scheduled-time>",
"execution_id": "<aws.scheduler.execution-id>"}`` (the last two only for the logs).
Output: ``{"dry_run", "cleaned_items", "details", "complete", "resume_after_user_id", "started_after_user_id"}``:
a walk of the ledger that does not fit in one invocation stops a minute before the time limit, and the next
scheduled invocation goes on from ``resume_after_user_id`` (kept in the run ledger's table). A dry run (an
invocation by hand) starts from the first user, keeps no place, and counts what fits in this invocation
(``complete`` says whether that was everything).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenmigration.aws.context import services
from tokenmigration.tracing import LazyTracer
from tokenmigration.workflow import fields, steps

logger = Logger()
tracer = LazyTracer()  # the X-Ray SDK only when tracing is on (tokenmigration.tracing)
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    dry_run = fields.boolean(event, "dry_run", default=False)
    logger.append_keys(scheduled_time=fields.optional_text(event, "scheduled_time"),
                       schedule_execution_id=fields.optional_text(event, "execution_id"))

    report = steps.scheduled_cleanup(services(), dry_run=dry_run,
                                     remaining_seconds=context.get_remaining_time_in_millis() / 1000)

    if not dry_run:
        metrics.add_metric(name="ItemsCleaned", unit=MetricUnit.Count, value=report["cleaned_items"])
    logger.info("cleanup done" if report["complete"] else "cleanup stopped at its time limit; the next "
                "scheduled invocation goes on", extra=report)
    return report
