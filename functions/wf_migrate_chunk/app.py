"""State "Migrate one chunk", inside the "Migrate chunks" Distributed Map.

Input: ``{"run_id", "dry_run", "chunk": {"number", "lo", "hi", "users"}}`` (the map's ItemSelector).
Output: the chunk's counts and whether this attempt was the one that counted them. Transient database
and Redis failures are raised as ``TransientDatabaseError`` / ``TransientRedisError``, and a count the run
ledger's table kept turning away (contention on the run item) as ``TransientLedgerError``; the state machine
retries all three; anything else fails the chunk.
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
    dry_run = fields.boolean(event, "dry_run", default=False)
    chunk = fields.chunk(event)
    logger.append_keys(run_id=run_id, chunk=chunk.number)
    metrics.add_metadata(key="run_id", value=run_id)

    try:
        outcome = steps.migrate_chunk(services(), run_id, chunk, dry_run)
    except Exception:
        # Counted per attempt: a retried chunk that then succeeds still shows up here, as it should.
        metrics.add_metric(name="ChunkFailures", unit=MetricUnit.Count, value=1)
        logger.exception("chunk failed")
        raise

    result = outcome.result
    if outcome.counted and not dry_run:
        # Only the attempt that counted the chunk reports users: CloudWatch sums match the run item.
        metrics.add_metric(name="UsersMigrated", unit=MetricUnit.Count, value=result.migrated_users)
        metrics.add_metric(name="UsersFailed", unit=MetricUnit.Count, value=result.failed_users)
        metrics.add_metric(name="SessionsMigrated", unit=MetricUnit.Count, value=result.sessions_migrated)
    logger.info("chunk done", extra={"counted": outcome.counted, "migrated": result.migrated_users,
                                     "skipped": result.skipped_users, "failed": result.failed_users})
    return {
        "chunk": chunk.number,
        "counted": outcome.counted,
        "processed_users": result.processed_users,
        "migrated_users": result.migrated_users,
        "skipped_users": result.skipped_users,
        "failed_users": result.failed_users,
        "sessions_migrated": result.sessions_migrated,
    }
