"""The migration API (api.md) on API Gateway: one Lambda function per route, all built from this package.

``functions/api_<route>/app.py`` holds only a thin handler: it builds the resolver with
``build_app(<route module>)`` and decorates ``lambda_handler`` with the shared Powertools Logger, Tracer and
Metrics (``tokenmigration.api.observability``). Routes live in ``tokenmigration.api.routes``, one module each;
``tokenmigration.api.openapi`` registers all of them to write ``docs/openapi.json``.
"""

from tokenmigration.api.resolver import MigrationResolver, build_app

__all__ = ["MigrationResolver", "build_app"]
