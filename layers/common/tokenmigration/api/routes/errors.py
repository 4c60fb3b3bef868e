"""GET /auth/migration/errors: a run's per-user problems, page by page."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query

from tokenmigration.api.errors import json_response
from tokenmigration.api.models import DEFAULT_PAGE, Cursor, ErrorsResponse, PageLimit, RunId
from tokenmigration.api.spec import ADMIN, BASE_PATH, responses
from tokenmigration.aws.context import services

PATH = f"{BASE_PATH}/errors"

DESCRIPTION = """\
Problems in chunk order (problems the plan found last). When the run failed or was aborted, the first page
starts with the run's own failure: `user_id` null, `code` `run_failed` or `run_aborted`, `message` the failing
step's error type and message (the same as `progress.error`). `session_id` is redacted (enough to find the key with
SCAN, not enough to use it) and absent for problems that are not about a session. Pass `next_cursor` back as
`cursor` for the next page; it is null on the last page. With no run ever started, the list is empty and
`migration_id` null.
"""


def register(app: APIGatewayRestResolver) -> None:
    @app.get(
        PATH,
        operation_id="listRunErrors",
        summary="Per-user problems of a run",
        description=DESCRIPTION,
        tags=["runs"],
        security=ADMIN,
        responses=responses(
            200, ErrorsResponse, "One page of problems.",
            (400, "`migration_id`, `limit` or `cursor` is invalid."),
            (404, "No run has that id."),
        ),
    )
    def list_errors(
        migration_id: Annotated[RunId, Query(description="A run id; default: the latest run.")] = None,
        limit: Annotated[PageLimit, Query(description="Page size, 1..100.")] = DEFAULT_PAGE,
        cursor: Annotated[Cursor, Query(description="`next_cursor` of the previous page.")] = None,
    ) -> Response[ErrorsResponse]:
        ledger = services().ledger
        run_id = migration_id or ledger.latest_run_id()
        if run_id is None:
            return json_response(200, {"success": True, "message": "No migration has been started yet",
                                       "migration_id": None, "errors": [], "next_cursor": None})
        problems, next_cursor = ledger.errors(run_id, limit=limit, cursor=cursor)
        return json_response(200, {
            "success": True,
            "message": f"{len(problems)} problem{'' if len(problems) == 1 else 's'} of run {run_id}",
            "migration_id": run_id,
            "errors": problems,
            "next_cursor": next_cursor,
        })
