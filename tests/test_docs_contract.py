"""The contracts the README relies on live in docs/, in this repository: the routes and shapes docs/api.md
promises are the ones the code serves and docs/openapi.json declares, and no document points outside the
repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tokenmigration.aws.progress import PROGRESS_FIELDS
from tokenmigration.local.server import routes_from_template
from tokenmigration.local.template import load_template

ROOT = Path(__file__).resolve().parents[1]
API_MD = (ROOT / "docs" / "api.md").read_text()
OPENAPI = json.loads((ROOT / "docs" / "openapi.json").read_text())
BASE = "/auth/migration"


def documented_admin_routes() -> dict[tuple[str, str], str]:
    """(METHOD, full path) -> success status, from the admin table's rows."""
    section = API_MD.split("## Admin routes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        found = re.match(r"\| (GET|POST|PUT|DELETE|PATCH) `([^`?]+)[^|]*\|[^|]*\| (\d{3}) ", line)
        if found:
            method, path, status = found.groups()
            rows[(method, BASE + path)] = status
    return rows


def test_every_admin_route_of_docs_api_md_is_served_and_declared():
    rows = documented_admin_routes()
    assert len(rows) >= 9, rows
    served = {(r.method, r.resource): r for r in routes_from_template(load_template(ROOT / "template.yaml"))}
    for (method, path), status in rows.items():
        assert (method, path) in served, f"docs/api.md documents {method} {path}, template.yaml has no such route"
        assert served[(method, path)].iam, f"{method} {path} is an admin route in docs/api.md but not IAM-signed"
        operation = OPENAPI["paths"][path][method.lower()]
        assert status in operation["responses"], f"{method} {path}: {status} not declared in docs/openapi.json"


def test_the_exchange_is_the_documented_public_route():
    assert "## Public route: `POST /exchange`" in API_MD
    served = {(r.method, r.resource): r for r in routes_from_template(load_template(ROOT / "template.yaml"))}
    assert not served[("POST", BASE + "/exchange")].iam
    assert {"200", "400", "401", "429"} <= set(OPENAPI["paths"][BASE + "/exchange"]["post"]["responses"])


def test_the_progress_object_is_the_one_docs_api_md_describes():
    section = API_MD.split("### The `progress` object", 1)[1].split("\n### ", 1)[0]
    contract, addition = section.split("This project adds", 1)
    values = ("migration", "rollback", "progress")  # a kind's values and the document's own name
    listed = [name for name in re.findall(r"`([a-z_]+)`", contract) if name not in values]
    assert (*listed, "error") == PROGRESS_FIELDS
    assert "`error`" in addition
    declared = OPENAPI["components"]["schemas"]["Progress"]["properties"]
    assert set(PROGRESS_FIELDS) == set(declared)


def test_no_document_links_outside_the_repository():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "../shared" not in text and "shared/spec" not in text, path.name
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" in target:
                continue
            assert (path.parent / target).resolve().is_relative_to(ROOT), f"{path.name} links outside: {target}"
            assert (path.parent / target).exists(), f"{path.name} links to a missing file: {target}"
