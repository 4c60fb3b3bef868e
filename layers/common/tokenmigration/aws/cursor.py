"""Opaque paging cursors: url-safe base64 of a small JSON object, so clients cannot lean on the key shape."""

from __future__ import annotations

import base64
import binascii
import json

from tokenmigration.aws.errors import BadCursor

_MAX_CURSOR_LENGTH = 1024


def encode_cursor(sort_key: str) -> str:
    raw = json.dumps({"sk": sort_key}, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, prefix: str) -> str:
    """The sort key a cursor resumes after; it must start with ``prefix`` (it cannot reach other items)."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > _MAX_CURSOR_LENGTH:
        raise BadCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor() from None
    sort_key = data.get("sk") if isinstance(data, dict) else None
    if not isinstance(sort_key, str) or not sort_key.startswith(prefix):
        raise BadCursor()
    return sort_key
