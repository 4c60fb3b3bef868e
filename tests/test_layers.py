"""Each layer uses only the ones below it: the wire formats import nothing of ours but each other and the leaf
error module, and the command line's modules import one another without a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "layers" / "common" / "tokenmigration"


def our_imports(path: Path) -> set[str]:
    """Every tokenmigration module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tokenmigration"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tokenmigration"))
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_formats_import_only_formats_and_the_leaf_error_module():
    allowed = ("tokenmigration.formats", "tokenmigration.settings_error")
    for path in sorted((PACKAGE / "formats").glob("*.py")):
        strays = {name for name in our_imports(path) if not name.startswith(allowed)}
        assert not strays, f"{path.name} imports {sorted(strays)}"


def test_the_command_line_modules_import_each_other_without_a_circle():
    modules = {module_name(p): p for p in (PACKAGE / "cli").glob("*.py")}
    edges = {name: {m for m in modules if m != name and m in our_imports(path)} for name, path in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in edges[start])

    circles = sorted(name for name in edges if reaches(name, name, {name}))
    assert not circles, {name: sorted(edges[name]) for name in circles}
