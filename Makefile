# Everything a fresh machine needs: `make demo` and `make test` create .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Lambda runs Python 3.13: use it when this machine has one, else python3. Take the real interpreter, not
# pyenv's shim: a shim refuses to run when 3.13 is not pyenv's selected version.
PYTHON313 ?= $(shell { ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3.13 2>/dev/null | tail -n 1; \
	python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null; } | head -n 1)
BOOTSTRAP_PYTHON ?= $(or $(PYTHON313),$(shell command -v python3))

.PHONY: install demo test coverage bench lint clean sam-validate sam-build ca-bundle

# The Amazon RDS CA bundle the layer verifies database TLS against, vendored from npm at build time.
CA_BUNDLE := layers/common/tokenmigration/certs/rds-ca-bundle.pem
ca-bundle: $(CA_BUNDLE)
$(CA_BUNDLE): tools/vendor_ca_bundle.sh
	tools/vendor_ca_bundle.sh $@

install: $(STAMP)

$(STAMP): pyproject.toml layers/common/requirements.txt
	@test -n "$(BOOTSTRAP_PYTHON)" || { echo "no python3 found" >&2; exit 1; }
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(VENV)/bin/tokenmigration demo

test: install browser-deps ca-bundle
	$(PY) -m pytest

# The suite under coverage, subprocesses included (the CLI as users run it, its workers): the total and every
# module under 85 %; fails when a user-facing CLI module is under it. PYTEST_ARGS narrows the run.
COVERAGE_DIR := .coverage-data
coverage: install ca-bundle
	rm -rf $(COVERAGE_DIR) && mkdir -p $(COVERAGE_DIR)
	COVERAGE_FILE=$(CURDIR)/$(COVERAGE_DIR)/cov $(VENV)/bin/coverage run -m pytest $(PYTEST_ARGS)
	COVERAGE_FILE=$(CURDIR)/$(COVERAGE_DIR)/cov $(VENV)/bin/coverage combine -q
	COVERAGE_FILE=$(CURDIR)/$(COVERAGE_DIR)/cov $(VENV)/bin/coverage json -q -o $(COVERAGE_DIR)/coverage.json
	$(PY) tools/coverage_summary.py $(COVERAGE_DIR)/coverage.json

bench: install
	$(PY) bench/bench.py $(BENCH_ARGS)

# POST /auth/migration/bridge's own latency through the local twin (bench/bridge_route_bench.py).
.PHONY: bench-bridge-route
bench-bridge-route: install
	$(PY) bench/bridge_route_bench.py $(BENCH_ARGS)

# /progress and /exchange latency (p50/p95) while a 100,000-user run executes in `local serve` (bench/twin_bench.py).
.PHONY: bench-twin
bench-twin: install
	$(PY) bench/twin_bench.py $(BENCH_ARGS)

# make bench at 1,000,000 users (PostgreSQL; the baseline on its first 2,000 users, extrapolated): users/s and
# peak RSS against the 100,000-user run show whether the cost per user grows with the run's size.
.PHONY: bench-1m
bench-1m: install
	$(PY) bench/bench.py --database postgresql --users 1000000 --baseline-users 2000 --runs 1 $(BENCH_ARGS)

# The Laravel bridge's first request vs an ordinary one, through the local twin (bench/bridge_bench.py).
.PHONY: bench-laravel-bridge
bench-laravel-bridge: install browser-deps
	$(PY) bench/bridge_bench.py $(BENCH_ARGS)

# The browser test's Express app: the npm packages pinned by its package-lock.json.
EXPRESS_APP := tests/bridge/express_app
.PHONY: browser-deps
browser-deps: $(EXPRESS_APP)/node_modules/.package-lock.json

$(EXPRESS_APP)/node_modules/.package-lock.json: $(EXPRESS_APP)/package-lock.json
	npm ci --prefix $(EXPRESS_APP) --no-audit --no-fund

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .tokenmigration .pytest_cache .ruff_cache .aws-sam $(CA_BUNDLE) $(COVERAGE_DIR)

# --- SAM: the CLI is heavy, so it gets its own virtualenv (.venv-sam), apart from the dev extra ---------
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed-stamp
SAM_CLI_VERSION ?= >=1.130,<2
# `sam build` looks for `python3.13` on PATH (the Lambda runtime): PYTHON313's directory goes first.
# No telemetry, no AWS account: validate and build are offline.
SAM_ENV := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1}

$(SAM_STAMP):
	$(or $(PYTHON313),python3) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet 'aws-sam-cli$(SAM_CLI_VERSION)'
	@touch $(SAM_STAMP)

# checkov (the security scan) in its own virtualenv: it pins much of what the dev extra also uses.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp
CHECKOV_VERSION ?= >=3.2,<4
$(CHECKOV_STAMP):
	$(or $(PYTHON313),python3) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov$(CHECKOV_VERSION)'
	@touch $(CHECKOV_STAMP)

# docs/cost.md: cost per run and scale at 1M/10M/100M users (CHUNK_SECONDS: your measured chunk duration).
.PHONY: cost
cost: install
	$(PY) tools/cost_model.py $(if $(CHUNK_SECONDS),--chunk-seconds $(CHUNK_SECONDS))

# Every finding fixed in template.yaml or waived, with its reason, in security/checkov-waivers.yaml.
.PHONY: security-scan
security-scan: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/python tools/security_scan.py $(CHECKOV_VENV)/bin/checkov

sam-validate: $(SAM_STAMP)
	$(SAM_ENV) $(SAM) validate --lint

sam-build: $(SAM_STAMP) $(CA_BUNDLE)
	@test -n "$(PYTHON313)" || { echo "sam build needs a python3.13 (the Lambda runtime); none found" >&2; exit 1; }
	PATH="$(dir $(PYTHON313)):$$PATH" $(SAM_ENV) $(SAM) build

# docs/openapi.json from the API routes (tokenmigration.api.routes); a test fails when it is stale.
.PHONY: openapi
openapi: install
	$(PY) -m tokenmigration.api.openapi docs/openapi.json

# The state machines' picture in docs/cutover.md, drawn by Graphviz from statemachine/*.asl.json; a test
# fails when docs/statemachines.dot no longer matches the ASL.
.PHONY: docs-statemachines
docs-statemachines: docs/statemachines.svg

docs/statemachines.dot: docs/asl_dot.py $(wildcard statemachine/*.asl.json)
	python3 docs/asl_dot.py statemachine/*.asl.json > $@

docs/statemachines.svg: docs/statemachines.dot
	@command -v dot >/dev/null || { echo "needs Graphviz's dot: apt-get install graphviz" >&2; exit 1; }
	dot -Tsvg $< -o $@
