# Every developer task has one name here; `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help build test test-rust test-python lint lint-rust lint-python bench bench-quick demo all clean

help:  ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.7,<2"
	touch $(STAMP)

build: $(STAMP)  ## compile the Rust core (release) into the venv with the dev extras
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --extras dev -q

test: test-rust test-python  ## the whole test suite: Rust unit tests, then pytest

test-rust:  ## cargo test of the pure core (no Python needed)
	cargo test --quiet

test-python: build  ## pytest (property, stateful and integration tests)
	$(PY) -m pytest

lint: lint-rust lint-python  ## formatting, clippy, ruff, mypy and the stub check

lint-rust:
	cargo fmt --check
	cargo clippy --all-targets --quiet -- -D warnings
	cargo clippy --features python --quiet -- -D warnings

lint-python: build
	$(VENV)/bin/ruff check python tests benches examples
	$(VENV)/bin/ruff format --check python tests benches examples
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest oqronkit._core

bench: build  ## the micro-benchmarks: ours vs peers, side by side, with ratios
	$(PY) benches/run.py

bench-quick: build  ## a few-second smoke run of the benchmarks (numbers not meaningful)
	$(PY) benches/run.py --quick

demo: build  ## the demo: webhooks delivered to local receivers on the embedded SQLite backend
	$(VENV)/bin/oqronkit demo

all: lint test bench  ## everything

clean:
	cargo clean
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
