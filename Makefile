# advlab: `make run` (set-up + the whole pipeline), `make test`, `make ui`, `make bench`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Stage commands call `python`, `snakemake`, `dvc`: the project's venv comes first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup run test test-all ui bench dvc-yaml clean-results

setup: $(STAMP)

# pip is upgraded first: the old resolver backtracks for many minutes on this dependency set.
# torchattacks 3.5.1 pins an old `requests` that MLflow and DVC cannot use: --no-deps.
$(STAMP): pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

run: $(STAMP)
	snakemake --cores all

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

ui: $(STAMP)
	mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" --host 127.0.0.1 --port 5000

# Ours vs torchattacks / foolbox on the same model and points; each prints a table and writes
# bench/out/<name>.json. One process at a time: timings on 2 cores are meaningless in parallel.
BENCHES := deepfool jsma cw onepixel print_photo uap
bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	set -e; for b in $(BENCHES); do $(PY) -m bench.$$b; done
	$(PY) -m bench.jsma --snap   # on points where torchattacks' and the paper's search domains coincide

dvc-yaml: $(STAMP)
	$(PY) -m pipeline.dvcgen
