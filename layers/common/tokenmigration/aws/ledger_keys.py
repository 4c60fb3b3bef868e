"""Keys of the run ledger's items (see ``runs.py`` for what each item holds)."""

from __future__ import annotations

from typing import Any

LOCK_KEY = {"pk": "LOCK", "sk": "ACTIVE"}
LATEST_KEY = {"pk": "LATEST", "sk": "RUN"}
CLEANUP_PLACE_KEY = {"pk": "CLEANUP", "sk": "PLACE"}
RUN_SK = "RUN"
ERROR_PREFIX = "ERR#"
PLAN_ERROR_PREFIX = "ERR#PLAN#"


def key(pk: str, sk: str) -> dict[str, Any]:
    """A low-level client Key."""
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def run_pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def chunk_sk(chunk_number: int) -> str:
    return f"CHUNK#{_chunk_digits(chunk_number)}"


def chunk_error_prefix(chunk_number: int) -> str:
    # Zero-padded so sort keys order chunks numerically (and errors page in chunk order).
    return f"{ERROR_PREFIX}{_chunk_digits(chunk_number)}#"


def _chunk_digits(chunk_number: int) -> str:
    if not isinstance(chunk_number, int) or isinstance(chunk_number, bool) or not 0 <= chunk_number < 10**9:
        raise ValueError(f"chunk number must be an integer in 0..999999999, got {chunk_number!r}")
    return f"{chunk_number:09d}"


def plan_slice_error_prefix(node_index: int, slice_number: int) -> str:
    """One slice of a plan's scan: a retried slice overwrites its own problems and no other slice's."""
    if not 0 <= node_index < 10**4 or not 0 <= slice_number < 10**9:
        raise ValueError("node index must be in 0..9999 and slice number in 0..999999999")
    return f"{PLAN_ERROR_PREFIX}{node_index:04d}#{slice_number:09d}#"
