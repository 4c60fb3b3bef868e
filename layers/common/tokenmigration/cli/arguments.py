"""Argument types shared by the command line's parsers."""

from __future__ import annotations

import argparse
import os

# Two per CPU, because a worker spends most of each chunk waiting on PostgreSQL; capped so a large
# machine does not open more connections than a production database should see from one migration.
MAX_DEFAULT_WORKERS = 16


def default_workers() -> int:
    return min(2 * (os.cpu_count() or 1), MAX_DEFAULT_WORKERS)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
