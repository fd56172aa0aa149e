# One-command set-up: every target below creates .venv/ and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA_SOURCE ?= ../shared/data
DATA_DIR ?= data/hw2_data
PYTEST_ARGS ?=
BENCH_ARGS ?=
# e.g. EVAL_ARGS="--ddpm-per-digit 0": 400-step DDPM on 1,000 digits takes hours of CPU (minutes on a GPU).
EVAL_ARGS ?=

.PHONY: install test test-unit run bench install-sizes screenshots data models evaluate report dann-table clean

# Every role of pyproject.toml in one .venv/: the API, the workers and the local redis-server for `make run`,
# training and evaluation for `make data/evaluate/report`, and the tests. An image installs one role (Dockerfile).
EXTRAS ?= api,worker,train,eval,local,test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: a bare "torch" requirement would pull a newer multi-GB build.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

test: install
	DATA_SOURCE=$(abspath $(DATA_SOURCE)) $(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	DATA_SOURCE=$(abspath $(DATA_SOURCE)) $(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

run: install
	$(PY) -m stack

# Starts its own stack on free ports and writes docs/bench.json; BENCH_ARGS="--sections service --quick" for a smoke run.
bench: install
	DATA_SOURCE=$(abspath $(DATA_SOURCE)) $(PY) -m bench $(BENCH_ARGS)

# docs/install-sizes.json: each role of pyproject.toml installed alone into a fresh venv (in /tmp), its import checked
# and its site-packages measured; needs no .venv/. The worker's takes minutes (torch); INSTALL_SIZES_ARGS="--roles api".
INSTALL_SIZES_ARGS ?=
install-sizes:
	$(PYTHON) -m bench.install_sizes $(INSTALL_SIZES_ARGS)

# docs/playground.png: the playground page in chromium, after one run of each panel on the shipped models.
screenshots: install
	DATA_SOURCE=$(abspath $(DATA_SOURCE)) SCREENSHOT_DIR=$(abspath docs) $(PY) -m pytest -q \
		tests/integration/test_playground_browser.py -k screenshot -p no:cacheprovider

models: install
	$(PY) -m models

data: install
	$(PY) -m training.data --source $(DATA_SOURCE) --out $(DATA_DIR)

$(DATA_DIR)/manifest.json:
	$(MAKE) data

# Re-measures every shipped number into the cards and checkpoints/metrics.json.
evaluate: install $(DATA_DIR)/manifest.json
	$(PY) -m training.evaluate all --data $(DATA_DIR) $(EVAL_ARGS)

# The DANN table: each method x target x seed to the end of one step plan (CPU hours; the JSON has each run's wall time),
# then docs/report/dann_table.json; `python -m training.dann_table --ship` copies seed 0 of each row to checkpoints/.
DANN_TABLE_ARGS ?= --seeds 0,1,2 --jobs 2
dann-table: install $(DATA_DIR)/manifest.json
	$(PY) -m training.dann_table --data $(DATA_DIR) $(DANN_TABLE_ARGS)

# Redraws docs/report/ (figures and tables) from the shipped checkpoints and metrics.json.
report: install $(DATA_DIR)/manifest.json
	$(PY) -m training.report --out docs/report --data $(DATA_DIR)

clean:
	rm -rf $(VENV) var .pytest_cache
