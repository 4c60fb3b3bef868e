"""POST /auth/migration/bridge: the Laravel app's server asks for the Laravel session of a browser's Express login.

Thin handler: the route lives in tokenmigration.api.routes.bridge (the common layer).
"""

from aws_lambda_powertools.logging import correlation_paths

from tokenmigration.api import build_app
from tokenmigration.api.observability import logger, metrics, tracer
from tokenmigration.api.routes import bridge

app = build_app(bridge)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event, context):
    return app.resolve(event, context)
