"""docs/cost.md is what `make cost` writes (tools/cost_model.py) from the current state machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _model():
    spec = importlib.util.spec_from_file_location("cost_model", ROOT / "tools" / "cost_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cost_document_is_current():
    assert (ROOT / "docs" / "cost.md").read_text() == _model().render(2000, 4.0), "run `make cost`"


def test_a_chunk_is_one_state_transition_and_a_slice_two():
    assert _model().states_entered() == (1, 2)


def test_no_run_size_nears_the_history_limit_or_a_state_payload():
    model = _model()
    big = model.run_cost(100_000_000, 150_000_000, 2000, 4.0)
    assert big["history"] < model.HISTORY_LIMIT / 10
    assert big["chunks"] == 50_000 and big["slices"] >= 8


def test_the_readme_lists_every_template_parameter():
    from tokenmigration.local.template import load_template

    readme = (ROOT / "README.md").read_text()
    deploy = readme[readme.index("### Deploying"):readme.index("### Operating it")]
    missing = [name for name in load_template(ROOT / "template.yaml")["Parameters"] if f"`{name}`" not in deploy]
    assert missing == []
