# Two commands on a fresh machine: `make run` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
PENIN   := $(VENV)/bin/penin
STAMP   := $(VENV)/.installed
DATA    ?= data

.PHONY: run test lint typecheck unit system-deps bench litellm-env clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	@sh scripts/run-node.sh $(PENIN) $(DATA)

system-deps:
	@sh scripts/install-system-deps.sh

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest

test: system-deps lint typecheck unit

# LiteLLM's proxy, in its own virtualenv: the router benchmark's comparison.
litellm-env:
	@sh benchmarks/litellm-env.sh

bench: $(STAMP) system-deps litellm-env
	$(PY) benchmarks/ledger_bench.py
	$(PY) benchmarks/node_bench.py
	$(PY) benchmarks/router_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
