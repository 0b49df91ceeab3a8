# Two commands on a fresh machine: `make run` (the whole pipeline) and `make test`.
# Each creates .venv and installs the project on first use.

PYTHON ?= python3.11
PORT   ?= 4200
MODEL  ?=
# MODEL=lenet5 (a key of params.yaml's `models`) reproduces that model's stages only.
TARGETS := $(if $(MODEL),evaluate@$(MODEL) plots@$(MODEL),)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export DC_PREFECT_PORT := $(PORT)
API    := http://127.0.0.1:$(PORT)/api

.PHONY: setup run test ui ui-stop schedule bench lint

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || \
	  { echo "Python 3.11 is needed (torch 2.14.1 wheels); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project with its dev tools

run: setup  ## the whole pipeline (both models; MODEL=name for one): params check, which stages will run and how long, server and warm stage runner, dvc repro
	$(PY) -m flows.check $(if $(MODEL),--model $(MODEL),)
	$(PY) -m runtime.preview $(TARGETS)
	$(PY) -m runtime.server start
	PREFECT_API_URL=$(API) dvc repro $(TARGETS)

test: setup  ## the test suite, on two workers (one file each at a time; OpenMP threads sleep, not spin, while they wait)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

ui: setup  ## start the local Prefect server and UI at http://127.0.0.1:$(PORT), and the warm stage runner
	$(PY) -m runtime.server start

ui-stop:  ## stop the local Prefect server and the warm stage runner
	$(PY) -m runtime.server stop

schedule: setup  ## rerun the pipeline on the cron in params.yaml (schedule:); Ctrl-C stops
	$(PY) -m runtime.server start
	PREFECT_API_URL=$(API) $(PY) -m runtime.schedule serve

bench: setup  ## the speed benchmarks (results go in BENCHMARKS.md)
	$(PY) -m benchmarks.bench_train
	$(PY) -m benchmarks.bench_kmeans
	$(PY) -m benchmarks.bench_huffman

lint: setup
	$(VENV)/bin/ruff check .
