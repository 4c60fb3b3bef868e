"""State "Roll back one chunk", inside the "Roll back chunks" Distributed Map.

Input: ``{"run_id", "chunk": {"number", "lo", "hi", "users"}}``. Output: what the chunk removed.
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
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_id = fields.text(event, "run_id")
    chunk = fields.chunk(event)
    logger.append_keys(run_id=run_id, chunk=chunk.number)
    metrics.add_metadata(key="run_id", value=run_id)

    try:
        outcome = steps.rollback_chunk(services(), run_id, chunk)
    except Exception:
        metrics.add_metric(name="ChunkFailures", unit=MetricUnit.Count, value=1)
        logger.exception("rollback chunk failed")
        raise

    result = outcome.result
    if outcome.counted:
        metrics.add_metric(name="UsersRolledBack", unit=MetricUnit.Count, value=result.users)
    return {
        "chunk": chunk.number,
        "counted": outcome.counted,
        "users": result.users,
        "tokens_revoked": result.tokens_revoked,
        "sessions_removed": result.sessions_removed,
    }
