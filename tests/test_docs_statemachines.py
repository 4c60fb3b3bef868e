"""docs/cutover.md's picture of the state machines is generated from statemachine/*.asl.json
(`make docs-statemachines`): these fail when the committed .dot or .svg no longer match the ASL."""

from __future__ import annotations

import html
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MACHINES = sorted((REPO / "statemachine").glob("*.asl.json"))


def _generator():
    spec = importlib.util.spec_from_file_location("asl_dot", REPO / "docs" / "asl_dot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _state_names(machine: dict) -> list[str]:
    names = []
    for name, state in machine["States"].items():
        names.append(name)
        body = state.get("ItemProcessor") or state.get("Iterator")
        for inner in ([body] if body else []) + state.get("Branches", []):
            names += _state_names(inner)
    return names


def test_committed_dot_matches_the_state_machines():
    expected = _generator().to_dot(MACHINES)
    assert (REPO / "docs" / "statemachines.dot").read_text() == expected, "run `make docs-statemachines`"


def test_committed_svg_is_rendered_from_it_and_shows_every_state():
    if shutil.which("dot") is None:
        pytest.fail("needs Graphviz's dot (bash .ci/run installs graphviz)", pytrace=False)
    rendered = subprocess.run(["dot", "-Tsvg", str(REPO / "docs" / "statemachines.dot")], capture_output=True,
                              text=True, check=True, timeout=60).stdout
    committed = html.unescape((REPO / "docs" / "statemachines.svg").read_text())
    for path in MACHINES:
        for name in _state_names(json.loads(path.read_text())):
            assert name in html.unescape(rendered)
            assert name in committed, f"{name} missing from docs/statemachines.svg: run `make docs-statemachines`"
    assert "](statemachines.svg)" in (REPO / "docs" / "cutover.md").read_text()  # embedded in the runbook
