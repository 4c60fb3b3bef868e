"""POST /auth/migration/user/{userId}/rollback: undo one user's migration."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Path

from tokenmigration.api.audit import audited
from tokenmigration.api.errors import json_response
from tokenmigration.api.models import UserId, UserRollbackResponse
from tokenmigration.api.observability import count
from tokenmigration.api.spec import ADMIN, BASE_PATH, responses
from tokenmigration.aws.context import services

PATH = f"{BASE_PATH}/user/<userId>/rollback"

DESCRIPTION = """\
Deletes the tokens and session rows the ledger lists for the user (whatever created them: a run, the
single-user route, the exchange) and clears `migrated_to_sanctum_at` / `migration_token_id`. Tokens and
sessions the application created are never touched.
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.post(
        PATH,
        operation_id="rollbackUser",
        summary="Roll one user back",
        description=DESCRIPTION,
        tags=["users"],
        security=ADMIN,
        responses=responses(
            200, UserRollbackResponse, "The user's migration was undone.",
            (400, "`userId` is not a positive integer."),
            (404, "No user has that id."),
            (409, "The user is not migrated."),
        ),
    )
    def rollback_user(
        userId: Annotated[UserId, Path(description="The user's id (users.id), a positive integer.")],
    ) -> Response[UserRollbackResponse]:
        svc = services()
        with audited(app, "user.rollback", user_id=userId) as audit:
            result = svc.migrator.rollback_user(userId)
            audit.update(tokens_revoked=result.tokens_revoked, sessions_removed=result.sessions_removed)
        count("UsersRolledBack")
        return json_response(200, {
            "success": True,
            "message": f"User {userId} rolled back",
            "data": {"tokens_revoked": result.tokens_revoked, "sessions_removed": result.sessions_removed},
        })
