"""Asking the operator, and the error they can fix: shared by every command module, importing none of them."""

from __future__ import annotations

import sys


class CliError(Exception):
    """A problem the user can fix; printed as one line without a traceback, exit 2."""


def confirm(question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise CliError(f"{question} Refusing without a terminal to confirm on: pass --yes.")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CliError("aborted")
