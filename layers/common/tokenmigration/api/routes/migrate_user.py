"""POST /auth/migration/user/{userId}: migrate one user now."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Path

from tokenmigration.api.audit import audited
from tokenmigration.api.errors import json_response
from tokenmigration.api.models import UserId, UserMigrationResponse
from tokenmigration.api.observability import count
from tokenmigration.api.spec import ADMIN, BASE_PATH, responses
from tokenmigration.aws.context import services
from tokenmigration.engine.runs import new_run_id

PATH = f"{BASE_PATH}/user/<userId>"

DESCRIPTION = """\
Creates the user's Sanctum migration token (its plaintext is never returned or kept) and marks the user
migrated, under the same rules as a run: a user who is already migrated or already holds Sanctum tokens is
refused with 409. The ledger records the token, so a rollback removes it.

**No Express sessions are carried over by this route (`sessions_migrated` is always 0).** connect-redis keeps
no per-user index, so finding one user's sessions means a SCAN of the whole session store, which is not
acceptable per request. The user's live sessions become Laravel sessions through the session exchange
(`POST /auth/migration/exchange`), which the client calls with its session cookie, or through a run.
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.post(
        PATH,
        operation_id="migrateUser",
        summary="Migrate one user",
        description=DESCRIPTION,
        tags=["users"],
        security=ADMIN,
        responses=responses(
            200, UserMigrationResponse, "The user was migrated.",
            (400, "`userId` is not a positive integer."),
            (404, "No user has that id."),
            (409, "The user is already migrated, already holds Sanctum tokens, or is locked by another "
                  "transaction (try again)."),
        ),
    )
    def migrate_user(
        userId: Annotated[UserId, Path(description="The user's id (users.id), a positive integer.")],
    ) -> Response[UserMigrationResponse]:
        svc = services()
        run_id = new_run_id("user")
        with audited(app, "user.migrate", user_id=userId, run_id=run_id) as audit:
            migrated = svc.migrator.migrate_user(userId, run_id)
            audit.update(token_id=migrated.token_id)
        count("UsersMigrated")
        return json_response(200, {
            "success": True,
            "message": f"User {userId} migrated",
            "data": {
                "token_id": migrated.token_id,
                "token_name": svc.settings.migration_token_name,
                "sessions_migrated": migrated.sessions_migrated,
            },
        })
