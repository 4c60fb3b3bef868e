"""Each Lambda handler imports what its own route needs and nothing else (the cold start; bench/cold_imports.py
measures the time). Checked in fresh interpreters by the modules they loaded, never by a clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROUTES = ("start", "progress", "complete", "rollback", "stats", "cleanup", "errors", "migrate_user", "rollback_user",
          "exchange", "bridge")
PROBE = """
import json, sys
sys.path[:0] = [{folder!r}, {layer!r}]
import app
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                        ("sqlalchemy", "redis", "aws_xray_sdk", "tokenmigration", "pg8000", "pymysql"))))
"""


def loaded(folder: str) -> set[str]:
    env = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_LAMBDA_FUNCTION_NAME": "probe", "POWERTOOLS_TRACE_DISABLED": "true",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", PROBE.format(folder=str(ROOT / "functions" / folder),
                                                             layer=str(ROOT / "layers" / "common"))],
                          env=env, capture_output=True, text=True, check=True, cwd=ROOT / "functions" / folder)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("folder", sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").is_file()))
def test_no_handler_imports_the_xray_sdk_or_another_routes_module(folder):
    modules = loaded(folder)
    assert not any(m.startswith("aws_xray_sdk") for m in modules)
    own = folder.removeprefix("api_")
    routes = {m.rsplit(".", 1)[1] for m in modules if m.startswith("tokenmigration.api.routes.")}
    assert routes <= {own}, routes


@pytest.mark.parametrize("folder", ["api_start", "api_complete", "api_errors", "api_rollback", "wf_mark_failed"])
def test_routes_without_database_or_redis_work_load_neither(folder):
    modules = loaded(folder)
    assert not {"sqlalchemy", "redis", "pg8000", "pymysql"} & {m.split(".")[0] for m in modules}, sorted(
        m for m in modules if m.split(".")[0] in ("sqlalchemy", "redis"))
