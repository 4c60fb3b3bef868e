"""The Powertools Logger, Tracer and Metrics every API function shares.

One of each per process (a Lambda container): the thin handlers in ``functions/api_*`` decorate their
``lambda_handler`` with them and the routes log, trace and count through them. Defaults keep a function
working when the template does not set the Powertools variables: a missing metrics namespace would
otherwise make ``log_metrics`` fail after the route already did its work.
"""

from __future__ import annotations

import os
import warnings

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from tokenmigration.tracing import LazyTracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "").strip() or "tokenmigration"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "").strip() or "TokenMigration"

# The logger is named after the service, so the layer's own ``logging.getLogger("tokenmigration.…")``
# lines go through the same JSON handler when the service is "tokenmigration".
logger = Logger(service=SERVICE)
tracer = LazyTracer(service=SERVICE)  # the X-Ray SDK only when tracing is on
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

# Read-only routes count nothing: that is expected, not worth a warning in every container's log.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)


def count(name: str, value: int = 1) -> None:
    """Add to a count metric of this invocation (flushed by ``@metrics.log_metrics``)."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
