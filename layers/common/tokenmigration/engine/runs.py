"""Run identifiers: also Step Functions execution names, so [A-Za-z0-9-_], at most 80 chars."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime


def new_run_id(kind: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{kind}-{stamp}-{secrets.token_hex(4)}"
