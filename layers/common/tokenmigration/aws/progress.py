"""The api.md ``progress`` object from a run item: percentage and ETA math, with no division by zero."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tokenmigration.aws.dynamo import iso, parse_iso

PROGRESS_FIELDS: tuple[str, ...] = (
    "migration_id", "kind", "status", "dry_run", "total_users", "processed_users", "migrated_users",
    "skipped_users", "failed_migrations", "sessions_migrated", "current_batch", "total_batches",
    "percentage", "started_at", "updated_at", "finished_at", "estimated_completion", "error",
)

COUNTERS: tuple[str, ...] = (
    "total_users", "processed_users", "migrated_users", "skipped_users", "failed_migrations",
    "sessions_migrated", "current_batch", "total_batches",
)


def percentage(processed: int, total: int) -> float:
    """processed / total * 100, two decimals; 0 for an empty plan.

    Capped at 100: a chunk counts the users it found, and users created inside a chunk's id range
    after planning can push processed past the planned total.
    """
    if total <= 0:
        return 0.0
    return min(round(processed / total * 100, 2), 100.0)


def estimated_completion(run: dict[str, Any]) -> str | None:
    """updated_at + remaining / rate, rate = processed / (updated_at - started_at).

    None when it cannot be estimated: the run is over, nothing is processed yet, or no time has passed
    between the first and the latest counted chunk (timestamps are whole seconds).
    """
    if run.get("status") != "RUNNING" or not run.get("started_at") or not run.get("updated_at"):
        return None
    processed = int(run.get("processed_users") or 0)
    if processed <= 0:
        return None
    started, updated = parse_iso(run["started_at"]), parse_iso(run["updated_at"])
    elapsed = (updated - started).total_seconds()
    if elapsed <= 0:
        return None
    remaining = max(int(run.get("total_users") or 0) - processed, 0)
    return iso(updated + timedelta(seconds=remaining * elapsed / processed))


def progress_from_run(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` is a run item as ``RunLedger.get_run`` returns it (numbers already int)."""
    counts = {name: int(run.get(name) or 0) for name in COUNTERS}
    return {
        "migration_id": run["run_id"],
        "kind": run["kind"],
        "status": run["status"],
        "dry_run": bool(run.get("dry_run", False)),
        **counts,
        "percentage": percentage(counts["processed_users"], counts["total_users"]),
        "started_at": run.get("started_at"),
        "updated_at": run.get("updated_at"),
        "finished_at": run.get("finished_at"),
        "estimated_completion": estimated_completion(run),
        "error": run_error(run),
    }


def run_error(run: dict[str, Any]) -> dict[str, str] | None:
    """Why the run ended without succeeding: the failing step's error type and the first line of its message
    (credentials taken out when it was recorded), or None."""
    text = run.get("error")
    if not text:
        return None
    name, sep, message = str(text).partition(": ")
    if not sep or " " in name:  # not "Type: message": keep it whole
        return {"type": "Error", "message": str(text)}
    return {"type": name, "message": message}


def run_error_entry(run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's own failure as the first entry of /errors, beside the per-user problems."""
    error = run_error(run)
    if error is None:
        return None
    status = str(run.get("status") or "FAILED").lower()
    return {"user_id": None, "code": f"run_{status}", "message": f"{error['type']}: {error['message']}"}
