"""Graphviz DOT for the state machines in statemachine/*.asl.json: the picture in docs/cutover.md is drawn
from the definitions Step Functions runs, never by hand. `make docs-statemachines` writes
docs/statemachines.dot and renders docs/statemachines.svg with Graphviz's `dot`; a test fails when the .dot
file no longer matches the ASL.

    python docs/asl_dot.py statemachine/*.asl.json > docs/statemachines.dot
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SHAPES = {"Task": "box", "Map": "box", "Parallel": "box", "Choice": "diamond", "Pass": "box", "Wait": "box",
          "Succeed": "box", "Fail": "octagon"}


def _id(*parts: str) -> str:
    return json.dumps("/".join(parts))  # a quoted DOT id; state names hold spaces


def _label(text: str) -> str:
    return json.dumps(text)


def _retry_note(state: dict[str, Any]) -> str:
    """One line per retrier: which errors (Lambda's own collapsed to "Lambda errors") and how many retries."""
    notes = []
    for retrier in state.get("Retry") or []:
        errors = retrier.get("ErrorEquals", [])
        lambda_errors = [e for e in errors if e.startswith("Lambda.")]
        named = (["Lambda errors"] if lambda_errors else []) + [e for e in errors if not e.startswith("Lambda.")]
        notes.append(f"\\nretry {', '.join(named)}: {retrier.get('MaxAttempts', 3)}x")
    return "".join(notes)


def _task_note(state: dict[str, Any]) -> str:
    function = (state.get("Parameters") or {}).get("FunctionName", "")
    if isinstance(function, str) and function.startswith("${") and function.endswith("}"):
        return f"\\nLambda {function[2:-1].removesuffix('Arn')}"
    return ""


def _cluster(prefix: str, name: str) -> str:
    return "cluster_" + f"{prefix}/{name}".replace(" ", "_").replace("/", "_")


def _condition(choice: dict[str, Any]) -> str:
    """A short label for a simple Choice rule (Variable + one comparison), else "choice"."""
    variable = choice.get("Variable")
    for key, value in choice.items():
        if key not in ("Variable", "Next") and variable:
            operator = {"Equals": "==", "GreaterThan": ">", "LessThan": "<", "GreaterThanEquals": ">=",
                        "LessThanEquals": "<="}
            word = next((op for name, op in operator.items() if key.endswith(name)), key)
            return f"{variable} {word} {json.dumps(value)}"
    return "choice"


def _machine(lines: list[str], prefix: str, machine: dict[str, Any], indent: str) -> tuple[str, str]:
    """Emit the states of one machine (or Map/Parallel body); the ids of its first state and of where it
    ends (its end marker, else its first Succeed state)."""
    states: dict[str, dict[str, Any]] = machine["States"]
    exits: dict[str, str] = {}  # a Map/Parallel's edges leave from its body's end
    for name, state in states.items():
        node = _id(prefix, name)
        kind = state["Type"]
        if kind in ("Map", "Parallel"):
            processor = state.get("ItemProcessor") or state.get("Iterator")
            cluster = _cluster(prefix, name)
            mode = ((processor or {}).get("ProcessorConfig") or {}).get("Mode", "INLINE")
            concurrency = state.get("MaxConcurrency") or ("from input" if state.get("MaxConcurrencyPath") else "")
            title = f"{name} ({kind}, {mode.lower()}" + (f", concurrency {concurrency}" if concurrency else "") + ")"
            lines.append(f"{indent}subgraph {cluster} {{")
            lines.append(f"{indent}  label={_label(title)}; style=rounded; color=gray40;")
            lines.append(f"{indent}  {node} [label=\"for each item\", shape=point, width=0.15];")
            bodies = [processor] if processor else state.get("Branches", [])
            exits[name] = node
            for index, body in enumerate(bodies):
                first, last = _machine(lines, f"{prefix}/{name}/{index}", body, indent + "  ")
                lines.append(f"{indent}  {node} -> {first};")
                if index == 0:
                    exits[name] = last
            lines.append(f"{indent}}}")
        else:
            shape = SHAPES.get(kind, "box")
            text = name + (_task_note(state) if kind == "Task" else "") + _retry_note(state)
            style = ', style="rounded"' if shape == "box" else ""
            if kind == "Succeed":
                style += ", peripheries=2"
            lines.append(f"{indent}{node} [label=\"{text}\", shape={shape}{style}];")
    for name, state in states.items():
        node = _id(prefix, name)
        if "Next" in state:
            # Out of a Map/Parallel: the edge leaves the whole box (compound), once every item is done.
            source, leave = node, ""
            if state["Type"] in ("Map", "Parallel"):
                source, leave = exits[name], f" [ltail={_cluster(prefix, name)}]"
            lines.append(f"{indent}{source} -> {_id(prefix, state['Next'])}{leave};")
        for choice in state.get("Choices", []):
            lines.append(f"{indent}{node} -> {_id(prefix, choice['Next'])} [label={_label(_condition(choice))}];")
        if "Default" in state:
            lines.append(f"{indent}{node} -> {_id(prefix, state['Default'])} [label=\"default\"];")
        for catch in state.get("Catch", []):
            errors = ", ".join(catch.get("ErrorEquals", []))
            lines.append(f"{indent}{node} -> {_id(prefix, catch['Next'])} [label={_label(errors)}, style=dashed];")
        if state.get("End"):
            lines.append(f"{indent}{node} -> {_id(prefix, 'end')};")
    last = next((_id(prefix, n) for n, st in states.items() if st["Type"] == "Succeed"), _id(prefix, "end"))
    if any(state.get("End") for state in states.values()):
        lines.append(f"{indent}{_id(prefix, 'end')} [label=\"\", shape=doublecircle, width=0.2];")
        last = _id(prefix, "end")
    return _id(prefix, machine["StartAt"]), last


def to_dot(paths: list[Path]) -> str:
    lines = ["// Generated by docs/asl_dot.py from statemachine/*.asl.json (make docs-statemachines): do not edit.",
             "digraph statemachines {",
             '  graph [rankdir=TB, compound=true, fontname="DejaVu Sans", fontsize=11, nodesep=0.4];',
             '  node [fontname="DejaVu Sans", fontsize=10];',
             '  edge [fontname="DejaVu Sans", fontsize=9];']
    for path in sorted(paths):
        machine = json.loads(path.read_text())
        title = path.name.removesuffix(".asl.json")
        lines.append(f"  subgraph cluster_{title} {{")
        caption = f"{title} state machine ({path.name})"
        lines.append(f"    label={_label(caption)}; fontsize=13; style=dashed;")
        start = _id(title, "start")
        lines.append(f"    {start} [label=\"start\", shape=circle, width=0.3, fontsize=8];")
        first, _ = _machine(lines, title, machine, "    ")
        lines.append(f"    {start} -> {first};")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(to_dot([Path(arg) for arg in sys.argv[1:]]))
