# One-command set-up: every target below creates .venv/ and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA_SOURCE ?= ../shared/data
DATA_DIR ?= data/hw2_data
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install test test-unit run bench data models train-all evaluate report clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: a bare "torch" requirement would pull a newer multi-GB build.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[eval,test]'
	touch $@

install: $(VENV)/.installed

test: install
	DATA_SOURCE=$(abspath $(DATA_SOURCE)) $(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	DATA_SOURCE=$(abspath $(DATA_SOURCE)) $(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

run: install
	$(PY) -m api.launcher

# Starts its own stack on free ports and writes docs/bench.json; BENCH_ARGS="--sections service --quick" for a smoke run.
bench: install
	DATA_SOURCE=$(abspath $(DATA_SOURCE)) $(PY) -m bench $(BENCH_ARGS)

models: install
	$(PY) -m models

data: install
	$(PY) -m training.data --source $(DATA_SOURCE) --out $(DATA_DIR)

clean:
	rm -rf $(VENV) var .pytest_cache
