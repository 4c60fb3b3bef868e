"""POST /auth/migration/cleanup: prune what this tool created and nobody can use any more."""

from __future__ import annotations

import time
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
# API Gateway gives up on a request after 29 s: the walk stops after the page that passes this budget, and the
# answer says where to continue. (The scheduled cleanup has minutes and keeps its own place.)
TIME_BUDGET_SECONDS = 20.0

DESCRIPTION = """\
Only rows in the migration ledger are candidates: expired migration tokens (Sanctum's prune-expired rule),
migrated session rows past their lifetime, ledger rows whose row is gone, and recorded failures of users that
have been migrated since. `details` counts each kind. A dry run does the same work and rolls it back, so its
counts are exactly what a real cleanup removes. The body is optional.

The ledger is cleaned in pages of user ids, each committed on its own. A call stops after about 20 seconds
(API Gateway's limit is 29): then `complete` is false and the same call with `after_user_id` set to the
answer's `resume_after_user_id` continues where it stopped (`tokenmigration api cleanup` does this by itself).
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
                             session_store=svc.migrator.session_store, after_user_id=body.after_user_id,
                             deadline=time.monotonic() + TIME_BUDGET_SECONDS)
            audit.update(cleaned_items=result["cleaned_items"], complete=result["complete"])
        verb = "would remove" if body.dry_run else "removed"
        message = f"{'Dry run: cleanup' if body.dry_run else 'Cleanup'} {verb} {result['cleaned_items']} items"
        if not result["complete"]:
            message += (f" and stopped at its time limit after user {result['resume_after_user_id']}: call again "
                        f"with after_user_id {result['resume_after_user_id']} to continue")
        return json_response(200, {
            "success": True,
            "message": message,
            **{key: result[key] for key in ("dry_run", "cleaned_items", "details", "complete",
                                            "resume_after_user_id")},
        })
