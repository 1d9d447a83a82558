# The two set-up commands of the README: `make demo` and `make test`. Each creates the
# virtual environment .venv on first use (torch comes from this machine's wheel cache).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmstore demo

lint: $(STAMP)
	$(VENV)/bin/ruff check mmstore plugins tests benchmarks
	$(VENV)/bin/ruff format --check mmstore plugins tests benchmarks
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_spine.py
