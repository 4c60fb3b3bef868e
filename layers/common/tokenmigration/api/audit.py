"""One structured audit line per state-changing call: who (the caller's IAM identity), what, on which run
or user, and how it ended.

The identity comes from API Gateway's ``requestContext.identity``, which API Gateway fills after it has
verified the SigV4 signature (the admin routes are AWS_IAM). Headers are never read here: they carry the
signature and the session token. Nothing in an audit line is a credential or a token; the access key *id*
is an identifier (CloudTrail logs it too), not a secret.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from tokenmigration.api.errors import status_of
from tokenmigration.api.observability import logger
from tokenmigration.aws.errors import RunInProgress

# requestContext.identity key -> audit key
IDENTITY_FIELDS: dict[str, str] = {
    "userArn": "user_arn",
    "caller": "caller",
    "user": "user",
    "accessKey": "access_key",
    "accountId": "account_id",
    "sourceIp": "source_ip",
    "userAgent": "user_agent",
}
_MAX_VALUE = 512


def caller_identity(event: Mapping[str, Any]) -> dict[str, str | None]:
    """The caller as API Gateway identified it; every field present (None when API Gateway left it out)."""
    context = event.get("requestContext") if isinstance(event, Mapping) else None
    identity = context.get("identity") if isinstance(context, Mapping) else None
    identity = identity if isinstance(identity, Mapping) else {}
    out: dict[str, str | None] = {}
    for source, target in IDENTITY_FIELDS.items():
        value = identity.get(source)
        out[target] = value[:_MAX_VALUE] if isinstance(value, str) else None
    return out


def request_id(event: Mapping[str, Any]) -> str | None:
    context = event.get("requestContext") if isinstance(event, Mapping) else None
    value = context.get("requestId") if isinstance(context, Mapping) else None
    return value if isinstance(value, str) else None


def write(event: Mapping[str, Any], action: str, outcome: str, status: int, **fields: Any) -> None:
    record = {
        "action": action,
        "outcome": outcome,
        "status": status,
        **{key: value for key, value in fields.items() if value is not None},
        "caller": caller_identity(event),
        "request_id": request_id(event),
    }
    logger.info(f"audit {action} {outcome}", extra={"audit": record})


@contextmanager
def audited(app: APIGatewayRestResolver, action: str, success_status: int = 200, **fields: Any
            ) -> Iterator[dict[str, Any]]:
    """Log one audit line when the block ends, however it ends.

    The block adds what it learns (the run id, counts) to the yielded dict. An exception is logged as
    ``refused`` (a 4xx refusal) or ``failed`` (anything else) with its code, and re-raised.
    """
    event = app.current_event.raw_event
    entry: dict[str, Any] = dict(fields)
    try:
        yield entry
    except Exception as exc:
        status = status_of(exc)
        if isinstance(exc, RunInProgress):
            entry["active_run_id"] = exc.active_run_id
        entry["error"] = getattr(exc, "code", None) or type(exc).__name__
        write(event, action, "refused" if status < 500 else "failed", status, **entry)
        raise
    write(event, action, "accepted" if success_status == 202 else "succeeded", success_status, **entry)
