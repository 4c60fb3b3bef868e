"""Bulk CSPRNG strings over [A-Za-z0-9], as Laravel's ``Str::random`` produces them.

Per-character ``secrets.choice`` costs tens of microseconds per token; mapping
``os.urandom`` bytes through a translation table with rejection of the top 8
values (248..255) keeps every character uniform over the 62-letter alphabet and
is two orders of magnitude faster.
"""

from __future__ import annotations

import os
import string

ALPHANUMERIC = string.ascii_letters + string.digits
_KEEP = 248  # largest multiple of 62 that fits a byte: 62 * 4
_TABLE = bytes(ord(ALPHANUMERIC[b % 62]) if b < _KEEP else 0 for b in range(256))
_REJECT = bytes(range(_KEEP, 256))


def random_alnum_block(count: int, length: int) -> list[str]:
    """Return ``count`` independent random strings of ``length`` alphanumeric characters."""
    needed = count * length
    pool = b""
    while len(pool) < needed:
        # 3.2% of bytes are rejected; ask for a little more than the shortfall.
        shortfall = needed - len(pool)
        pool += os.urandom(shortfall + shortfall // 16 + 64).translate(_TABLE, _REJECT)
    text = pool[:needed].decode("ascii")
    return [text[i : i + length] for i in range(0, needed, length)]


def random_alnum(length: int) -> str:
    return random_alnum_block(1, length)[0]
