"""POST /auth/migration/exchange: the public session exchange.

Thin handler: the route lives in tokenmigration.api.routes.exchange (the common layer).
"""

from aws_lambda_powertools.logging import correlation_paths

from tokenmigration.api import build_app
from tokenmigration.api.observability import logger, metrics, tracer
from tokenmigration.api.routes import exchange

app = build_app(exchange)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event, context):
    return app.resolve(event, context)
