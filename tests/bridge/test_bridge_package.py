"""integrations/laravel is a valid Composer package whose classes all load by its PSR-4 map: checked with
Debian's composer, offline (Packagist is never contacted: no install, only validation and an autoload dump)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import BRIDGE_PACKAGE


def composer(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    if shutil.which("composer") is None:
        pytest.fail("needs Debian's composer (bash .ci/run installs it)", pytrace=False)
    return subprocess.run(["composer", *args, "--no-interaction"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env={"PATH": "/usr/bin:/bin", "COMPOSER_HOME": str(home),
                                                         "COMPOSER_DISABLE_NETWORK": "1"})


def test_composer_json_is_valid(tmp_path):
    done = composer("validate", "--strict", "--no-check-publish", cwd=BRIDGE_PACKAGE, home=tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_class_follows_the_psr4_map(tmp_path):
    copy = tmp_path / "package"
    shutil.copytree(BRIDGE_PACKAGE, copy, ignore=shutil.ignore_patterns("vendor"))
    done = composer("dump-autoload", "--optimize", "--strict-psr", cwd=copy, home=tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr
    classmap = (copy / "vendor" / "composer" / "autoload_classmap.php").read_text()
    sources = sorted(p.relative_to(copy / "src").with_suffix("") for p in (copy / "src").rglob("*.php"))
    for source in sources:
        name = "TokenMigration\\\\Laravel\\\\" + "\\\\".join(source.parts)
        assert name in classmap, f"{source} is not autoloaded as {name}"
    provider = json.loads((copy / "composer.json").read_text())["extra"]["laravel"]["providers"]
    assert provider == ["TokenMigration\\Laravel\\BridgeServiceProvider"]
