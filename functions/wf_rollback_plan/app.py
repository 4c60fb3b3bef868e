"""State "Plan the rollback" of the rollback state machine.

Input: the execution input, ``{"run_id", "chunk_size", ...}``. Output: ``{"chunks": {"Bucket", "Key"},
"total_users", "total_batches"}``: chunks over the users table's ids, stretched to every user id the ledger
names (Migrator.plan_rollback).
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
    run_id = fields.text(event, "run_id")
    chunk_size = fields.integer(event, "chunk_size", minimum=1, maximum=10_000)
    logger.append_keys(run_id=run_id)
    metrics.add_metadata(key="run_id", value=run_id)

    outcome = steps.plan_rollback(services(), run_id, chunk_size)

    metrics.add_metric(name="UsersToRollBack", unit=MetricUnit.Count, value=outcome.total_users)
    logger.info("rollback planned", extra={"total_users": outcome.total_users,
                                           "total_batches": outcome.total_batches})
    return {"chunks": outcome.chunks, "total_users": outcome.total_users, "total_batches": outcome.total_batches}
