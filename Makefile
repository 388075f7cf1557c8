PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint unit integration bench chaos proto system-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,helm]'
	touch $(STAMP)

system-deps:
	./scripts/install-system-deps.sh

demo: install
	$(PY) demo/run.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) scripts/gen_proto.py --check

unit: install
	$(VENV)/bin/pytest -q tests/unit

integration: install system-deps
	$(VENV)/bin/pytest -q tests/integration

test: install system-deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=15 tests

BENCHES := failover rules detect rollback webhook fleet resync stream

# Each benchmark prints one JSON object as its last line and writes bench/results/<name>.json; then the table in
# docs/performance.md is regenerated from them.
bench: install system-deps
	@set -e; for b in $(BENCHES); do echo "== bench/$$b"; $(PY) bench/$$b.py; done
	@echo "results: bench/results/*.json"
	$(PY) bench/performance_table.py

# The adversarial proof run (docs/chaos.md); bench/results/chaos.json; fails when any check fails.
chaos: install
	$(PY) bench/chaos.py

proto: install
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
