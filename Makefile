PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint unit integration bench chaos proto system-deps clean mlserver mlflow demo-mlserver

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,helm]'
	touch $(STAMP)

system-deps:
	./scripts/install-system-deps.sh

# MLServer for its integration tests and `make demo-mlserver`, in its own venv (its pins clash with the agent's and
# it is never a runtime dependency).
VENV_MLSERVER := .venv-mlserver
MLSERVER_STAMP := $(VENV_MLSERVER)/.installed

mlserver: $(MLSERVER_STAMP)

$(MLSERVER_STAMP):
	$(PYTHON) -m venv $(VENV_MLSERVER)
	$(VENV_MLSERVER)/bin/python -m pip install -q --upgrade pip
	$(VENV_MLSERVER)/bin/python -m pip install -q mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn
	touch $(MLSERVER_STAMP)

# An MLflow tracking server for the MLflow registry's integration tests, in its own venv: the agent talks to MLflow
# over REST and never imports it. 3.18.0 has no matching mlflow-skinny: keep the pin.
VENV_MLFLOW := .venv-mlflow
MLFLOW_STAMP := $(VENV_MLFLOW)/.installed

mlflow: $(MLFLOW_STAMP)

$(MLFLOW_STAMP):
	$(PYTHON) -m venv $(VENV_MLFLOW)
	$(VENV_MLFLOW)/bin/python -m pip install -q --upgrade pip
	$(VENV_MLFLOW)/bin/python -m pip install -q mlflow==3.17.2
	touch $(MLFLOW_STAMP)

demo: install
	$(PY) demo/run.py

# The same story on real MLServer (README, "Works with").
demo-mlserver: install $(MLSERVER_STAMP)
	$(PY) demo/run.py --server mlserver

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) scripts/gen_proto.py --check

unit: install
	$(VENV)/bin/pytest -q tests/unit

integration: install system-deps $(MLSERVER_STAMP) $(MLFLOW_STAMP)
	$(VENV)/bin/pytest -q tests/integration

test: install system-deps $(MLSERVER_STAMP) $(MLFLOW_STAMP) lint
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=15 tests

BENCHES := failover rules detect rollback webhook fleet resync stream canary

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
