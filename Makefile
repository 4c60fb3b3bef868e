# Everything a fresh machine needs: `make demo` and `make test` create .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Lambda runs Python 3.13: use it when this machine has one (pyenv keeps one here), else python3.
BOOTSTRAP_PYTHON ?= $(shell command -v python3.13 2>/dev/null || ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | tail -n 1 || command -v python3)

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml layers/common/requirements.txt
	@test -n "$(BOOTSTRAP_PYTHON)" || { echo "no python3 found" >&2; exit 1; }
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(VENV)/bin/tokenmigration demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) bench/bench.py $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .tokenmigration .pytest_cache .ruff_cache .aws-sam
