"""States "Finish the run" / "Finish the rollback": flags, status SUCCEEDED, drop the index, release the lock.

Input: ``{"run_id", "kind": "migration" | "rollback", "dry_run"}``. Output: the run's progress object.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenmigration.aws.context import services
from tokenmigration.aws.runs import KINDS
from tokenmigration.tracing import LazyTracer
from tokenmigration.workflow import fields, steps

logger = Logger()
tracer = LazyTracer()  # the X-Ray SDK only when tracing is on (tokenmigration.tracing)
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_id = fields.text(event, "run_id")
    kind = fields.choice(event, "kind", KINDS)
    dry_run = fields.boolean(event, "dry_run", default=False)
    logger.append_keys(run_id=run_id, kind=kind)

    progress = steps.finalize(services(), run_id, kind, dry_run)

    metrics.add_dimension(name="kind", value=kind)
    metrics.add_metric(name="RunsSucceeded", unit=MetricUnit.Count, value=1)
    logger.info("run finished", extra={"status": progress["status"],
                                       "processed_users": progress["processed_users"]})
    return progress
