"""Request and response models of the migration API (api.md), for validation and the OpenAPI document.

Request bodies are strict JSON: ``confirm`` must be the JSON literal ``true`` (not ``1``, not ``"true"``),
numbers must be JSON integers, and unknown fields are refused, so a misspelt ``"dryrun": true`` can never
start a real migration. Responses are validated against these models before they leave, so a route cannot
drift from the contract without its tests noticing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_serializer,
)

from tokenmigration.aws.error_items import MAX_PAGE
from tokenmigration.aws.run_limits import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    MAX_CHUNK_SIZE,
    MAX_CONCURRENCY,
)

DEFAULT_PAGE = 50
# users.id is a PostgreSQL bigint: anything larger cannot name a user (and must not reach the database).
MAX_USER_ID = 2**63 - 1
# Run ids are Step Functions execution names: [A-Za-z0-9_-], at most 80 characters.
RUN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"
MAX_CURSOR_LENGTH = 1024
# Cursors are url-safe base64 without padding (aws.cursor). Saying so keeps a documented cursor inside API
# Gateway's 10,240 bytes of request line and headers: 1,024 other characters, percent-encoded, could pass it.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]*$"


def _user_id_digits(value: Any) -> Any:
    """Path parameters arrive as text: only plain decimal digits name a user (not "1.0", "+5", "1_000")."""
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise ValueError("must be a positive integer")
        if len(value) > 19 or int(value) > MAX_USER_ID:
            raise ValueError(f"must be at most {MAX_USER_ID}")
    return value


def _blank_is_absent(value: Any) -> Any:
    # ?migration_id= means "not given", as Laravel's ConvertEmptyStringsToNull has it.
    return None if isinstance(value, str) and not value.strip() else value


# Constraints first, validators last: the validator runs before them, and the JSON schema keeps them.
UserId = Annotated[int, at.Ge(1), at.Le(MAX_USER_ID), BeforeValidator(_user_id_digits)]
RunId = Annotated[Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)] | None, BeforeValidator(_blank_is_absent)]
PageLimit = Annotated[int, at.Ge(1), at.Le(MAX_PAGE)]
Cursor = Annotated[Annotated[str, StringConstraints(max_length=MAX_CURSOR_LENGTH, pattern=CURSOR_PATTERN)] | None,
                   BeforeValidator(_blank_is_absent)]


class _StrictBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ConfirmRequest(_StrictBody):
    """A state-changing admin call: the body must say ``{"confirm": true}``."""

    confirm: Literal[True] = Field(description="Must be the JSON literal true.")

    @field_validator("confirm", mode="before")
    @classmethod
    def _literally_true(cls, value: Any) -> Any:
        # Literal[True] alone lets 1 through (1 == True in Python).
        if value is not True:
            raise ValueError("must be true")
        return value


class StartRequest(ConfirmRequest):
    dry_run: bool = Field(False, description="Count what a run would do, and change nothing.")
    chunk_size: Annotated[int, at.Ge(1), at.Le(MAX_CHUNK_SIZE)] = Field(
        DEFAULT_CHUNK_SIZE, description="Users per chunk (one Lambda invocation, one transaction)."
    )
    max_concurrency: Annotated[int, at.Ge(1), at.Le(MAX_CONCURRENCY)] = Field(
        DEFAULT_MAX_CONCURRENCY, description="Chunks migrated at the same time (the Distributed Map's MaxConcurrency)."
    )


class CleanupRequest(_StrictBody):
    dry_run: bool = Field(False, description="Count what cleanup would remove, and remove nothing.")
    after_user_id: Annotated[int, at.Ge(0), at.Le(MAX_USER_ID)] | None = Field(
        None, description="Continue a cleanup that stopped at its time limit: the `resume_after_user_id` of the "
                          "previous answer. Absent: start with the first user.")


# --- responses ----------------------------------------------------------------------------------------


class ErrorResponse(BaseModel):
    success: Literal[False] = False
    message: str


class ValidationErrorResponse(ErrorResponse):
    errors: dict[str, list[str]] = Field(description="Messages per request field (body, query or path).")


class ConflictResponse(ErrorResponse):
    migration_id: str | None = Field(None, description="The run that holds the active-run lock, if any.")


class StartResponse(BaseModel):
    success: Literal[True] = True
    message: str
    migration_id: str
    execution_arn: str
    dry_run: bool


class RollbackResponse(BaseModel):
    success: Literal[True] = True
    message: str
    auth_mode: Literal["dual"] = "dual"
    rollback_id: str
    execution_arn: str


class CompleteResponse(BaseModel):
    success: Literal[True] = True
    message: str
    auth_mode: Literal["sanctum_only"] = "sanctum_only"


class RunFailure(BaseModel):
    type: str = Field(description="The error's name, as Step Functions reports it (e.g. TransientRedisError, "
                      "States.Timeout).")
    message: str


class Progress(BaseModel):
    migration_id: str
    kind: Literal["migration", "rollback"]
    status: Literal["RUNNING", "SUCCEEDED", "FAILED", "ABORTED"]
    dry_run: bool
    total_users: int
    processed_users: int
    migrated_users: int
    skipped_users: int
    failed_migrations: int
    sessions_migrated: int
    current_batch: int
    total_batches: int
    percentage: float = Field(description="processed_users / total_users * 100, two decimals.")
    started_at: str | None
    updated_at: str | None
    finished_at: str | None
    estimated_completion: str | None
    error: RunFailure | None = Field(
        None, description="Why the run failed or was aborted: the failing step's error type and the first line "
        "of its message (credentials removed); null while it runs and when it succeeded.")


class Stats(BaseModel):
    total_users: int | None = Field(description="Counted; when `exact` is false, the planner's estimate (null if "
                                                "it has none).")
    migrated_users: int | None = Field(description="Counted; when `exact` is false, PostgreSQL's estimate from its "
                                                   "column statistics, null on MySQL/MariaDB.")
    failed_migrations: int | None = Field(description="Counted; null only when even that count ran out of time "
                                                      "and the database had no estimate.")
    migration_percentage: float | None
    last_migration_at: str | None = Field(description="null when `exact` is false.")
    exact: bool = Field(description="False when the users table is too large to count within API Gateway's time "
                                    "limit (more than 5 million rows, or a count that did not end in 10 s): the "
                                    "figures are then estimates; `tokenmigration stats` counts without a limit.")


class FeatureFlagsView(BaseModel):
    auth_mode: Literal["dual", "sanctum"]
    sanctum_only: bool
    migration_in_progress: bool = Field(description="True exactly while a run holds the active-run lock.")
    rollback_available: bool


class ProgressResponse(BaseModel):
    success: Literal[True] = True
    message: str
    progress: Progress | None = Field(description="null when no run was ever started.")
    stats: Stats
    is_in_progress: bool
    can_rollback: bool


class StatsResponse(BaseModel):
    success: Literal[True] = True
    message: str
    stats: Stats
    feature_flags: FeatureFlagsView


class CleanupResponse(BaseModel):
    success: Literal[True] = True
    message: str
    dry_run: bool
    cleaned_items: int
    details: dict[str, int]
    complete: bool = Field(description="Every ledgered user was cleaned. False when the call stopped at its time "
                                       "limit: call again with `after_user_id` set to `resume_after_user_id`.")
    resume_after_user_id: int | None = Field(description="Where the next call continues; null when complete.")


class RunError(BaseModel):
    user_id: int | None = Field(description="null for the run's own failure (code run_failed or run_aborted) and "
                                "for problems of a session no user could be read from.")
    session_id: str | None = Field(None, description="Redacted Express session id; absent when not about a session.")
    code: str
    message: str

    # No return annotation: with one, the schema of the serialized form would become a bare object.
    @model_serializer(mode="wrap")
    def _omit_absent_session(self, handler):
        data = handler(self)
        if data.get("session_id") is None:
            data.pop("session_id", None)
        return data


class ErrorsResponse(BaseModel):
    success: Literal[True] = True
    message: str
    migration_id: str | None = Field(description="The run these errors belong to (null: no run yet).")
    errors: list[RunError]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class UserMigration(BaseModel):
    token_id: int
    token_name: str
    sessions_migrated: int


class UserMigrationResponse(BaseModel):
    success: Literal[True] = True
    message: str
    data: UserMigration


class UserRollback(BaseModel):
    tokens_revoked: int
    sessions_removed: int


class UserRollbackResponse(BaseModel):
    success: Literal[True] = True
    message: str
    data: UserRollback


class TokenResponse(BaseModel):
    """RFC 8693 section 2.2.1: the issued token."""

    access_token: str
    token_type: str
    issued_token_type: str
    expires_in: int | None = None


class OAuthError(BaseModel):
    error: str


class BridgeRequestBody(BaseModel):
    """POST /bridge: what the Laravel app's server sends for one browser (documentation; parsed by the route)."""

    session_cookie: str = Field(description="The browser's connect.sid cookie value exactly as it was sent "
                                            "(URL-encoded or not, `s%3A...`).", min_length=1, max_length=4096)
    client_ip: str | None = Field(default=None, description="The browser's IP address as the app sees it; the "
                                                            "failure throttle counts by it (and by the Express "
                                                            "session), never by the caller's address.")


class BridgeResponse(BaseModel):
    """The Laravel session that carries the browser's Express login."""

    user_id: int
    session_id: str = Field(description="The 40-character id of the Laravel session row migrated from this "
                                        "Express session; the app switches the request's session to it.")
    session_cookie_name: str | None = Field(default=None, description="Laravel's session.cookie, as configured.")
    lifetime_minutes: int = Field(description="LARAVEL_SESSION_LIFETIME.")
    auth_mode: Literal["dual"]


class BridgeOffError(BaseModel):
    error: Literal["bridge_off"]
    auth_mode: Literal["dual", "sanctum"]
    exchange_enabled: bool
