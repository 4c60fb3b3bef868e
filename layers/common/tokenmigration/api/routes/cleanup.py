"""POST /auth/migration/cleanup: prune what this tool created and nobody can use any more."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from tokenmigration.api.audit import audited
from tokenmigration.api.errors import json_response
from tokenmigration.api.models import CleanupRequest, CleanupResponse
from tokenmigration.api.spec import ADMIN, BASE_PATH, responses
from tokenmigration.aws.context import services
from tokenmigration.db.upgrade import token_columns
from tokenmigration.engine.cleanup import cleanup

PATH = f"{BASE_PATH}/cleanup"

DESCRIPTION = """\
Only rows in the migration ledger are candidates: expired migration tokens (Sanctum's prune-expired rule),
migrated session rows past their lifetime, ledger rows whose row is gone, and recorded failures of users that
have been migrated since. `details` counts each kind. A dry run does the same work and rolls it back, so its
counts are exactly what a real cleanup removes. The body is optional.
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.post(
        PATH,
        operation_id="cleanup",
        summary="Prune expired migration tokens and stale rows",
        description=DESCRIPTION,
        tags=["maintenance"],
        security=ADMIN,
        responses=responses(
            200, CleanupResponse, "What was (or, for a dry run, would be) removed.",
            (400, "The body is invalid."),
        ),
    )
    def run_cleanup(body: Annotated[CleanupRequest, Body()] = CleanupRequest()) -> Response[CleanupResponse]:  # noqa: B008
        svc = services()
        with audited(app, "migration.cleanup", dry_run=body.dry_run) as audit:
            has_expires_at = "expires_at" in token_columns(svc.engine)
            result = cleanup(svc.engine, svc.settings, dry_run=body.dry_run, has_expires_at=has_expires_at,
                             session_store=svc.migrator.session_store)
            audit.update(cleaned_items=result["cleaned_items"])
        verb = "would remove" if body.dry_run else "removed"
        return json_response(200, {
            "success": True,
            "message": f"{'Dry run: cleanup' if body.dry_run else 'Cleanup'} {verb} {result['cleaned_items']} items",
            "dry_run": result["dry_run"],
            "cleaned_items": result["cleaned_items"],
            "details": result["details"],
        })
