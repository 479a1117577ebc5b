# Quick start: `make demo`, then `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and alone: pip takes the local CPU wheel; every later install sees
# torch==2.13.0 already satisfied and never fetches a CUDA build.
$(STAMP): pyproject.toml federate-requirements.txt $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/pip install -q --no-deps -r federate-requirements.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/wattwise optimize minilm --budget "fidelity>=0.99" --objective throughput --batch-size 32 --time-limit 100s --out report/

# Two xdist workers (one per core on the 2-core machines); each test module stays on one worker,
# the Ray server and torchrun modules share one, the longest start first (tests/conftest.py:
# its own scheduler, and xdist must not reorder), one torch thread per worker (two workers'
# OpenMP threads oversubscribed the 2 cores 9x). The 10 slowest tests are printed.
test: $(STAMP) etcd chromium
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=10

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) report build *.egg-info

# etcd for the etcd lease tests (tests/train): Debian's etcd-server, installed only when missing
# (needs root; the tests skip with a reason when etcd is absent).
.PHONY: etcd
etcd:
	@command -v etcd >/dev/null || (apt-get update -qq && apt-get install -y -qq etcd-server) \
		|| echo "etcd-server could not be installed: the etcd lease tests will skip"

# chromium for the report test (renders index.html headless): Debian's package, installed only
# when missing, as etcd-server above (the test skips with a reason when it is absent).
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "chromium could not be installed: the report rendering test will skip"
