"""Typed reads of a step's input, failing with ``InvalidStepInput`` that names the field.

A step's input comes from our own state machine definition, so a bad one is a definition bug: it is
reported under its own error name and never retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenmigration.engine.results import Chunk
from tokenmigration.workflow.errors import InvalidStepInput

_MISSING = object()


def _get(data: Mapping[str, Any], name: str, default: Any = _MISSING) -> Any:
    if not isinstance(data, Mapping):
        raise InvalidStepInput(f"step input must be a JSON object, got {type(data).__name__}")
    value = data.get(name, default)
    if value is _MISSING:
        raise InvalidStepInput(f"step input lacks {name!r}")
    return value


def text(data: Mapping[str, Any], name: str, default: Any = _MISSING) -> str:
    value = _get(data, name, default)
    if not isinstance(value, str) or not value.strip():
        raise InvalidStepInput(f"{name!r} must be a non-empty string")
    return value


def optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = _get(data, name, None)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidStepInput(f"{name!r} must be a string")
    return value


def boolean(data: Mapping[str, Any], name: str, default: Any = _MISSING) -> bool:
    value = _get(data, name, default)
    if not isinstance(value, bool):
        raise InvalidStepInput(f"{name!r} must be true or false")
    return value


def integer(data: Mapping[str, Any], name: str, minimum: int, maximum: int | None = None,
            default: Any = _MISSING) -> int:
    value = _get(data, name, default)
    # bool is an int in Python; true is no chunk size.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidStepInput(f"{name!r} must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise InvalidStepInput(f"{name!r} must be in {bounds}, got {value}")
    return value


def mapping(data: Mapping[str, Any], name: str, default: Any = _MISSING) -> dict[str, Any]:
    value = _get(data, name, default)
    if not isinstance(value, Mapping):
        raise InvalidStepInput(f"{name!r} must be a JSON object")
    return dict(value)


def choice(data: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = text(data, name)
    if value not in allowed:
        raise InvalidStepInput(f"{name!r} must be one of {allowed}, got {value!r}")
    return value


def chunk(data: Mapping[str, Any], name: str = "chunk") -> Chunk:
    """A chunk as the plan wrote it into the chunk list (and the Distributed Map hands it on)."""
    raw = mapping(data, name)
    return Chunk(integer(raw, "number", minimum=0), integer(raw, "lo", minimum=0),
                 integer(raw, "hi", minimum=0), integer(raw, "users", minimum=0))
