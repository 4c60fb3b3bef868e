"""The workflow tests: handlers, state machines and template, with the ``aws_stack`` fixture (tests/aws/stack.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A handler that fails before it counted anything flushes no metric, and Powertools warns about that;
    # pytest resets warning filters for every test, so the filter goes on each of ours.
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:No application metrics to publish"))
