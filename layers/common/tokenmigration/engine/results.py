"""What engine calls report back: counts and per-user / per-session problems."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


def redact_session_id(session_id: str) -> str:
    """Enough of an Express session id to find the key with SCAN, not enough to use it."""
    return session_id[:8] + "…" if len(session_id) > 8 else session_id


def session_fingerprint(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    message: str
    user_id: int | None = None
    session_id: str | None = None  # always redacted

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, slots=True)
class Chunk:
    """Users with ``lo <= id <= hi``; ``users`` of them existed when the run was planned."""

    number: int
    lo: int
    hi: int
    users: int

    def to_dict(self) -> dict[str, int]:
        return {"number": self.number, "lo": self.lo, "hi": self.hi, "users": self.users}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chunk:
        return cls(int(data["number"]), int(data["lo"]), int(data["hi"]), int(data["users"]))


@dataclass(slots=True)
class ChunkResult:
    chunk: int
    dry_run: bool = False
    processed_users: int = 0
    migrated_users: int = 0
    skipped_users: int = 0
    failed_users: int = 0
    sessions_migrated: int = 0
    skip_reasons: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skip_reasons"] = dict(self.skip_reasons)
        data["problems"] = [p.to_dict() for p in self.problems]
        return data


@dataclass(slots=True)
class RollbackResult:
    chunk: int | None = None
    users: int = 0
    tokens_revoked: int = 0
    sessions_removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
