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

# The tests marked `kernels` run a second time on torch's portable kernels, so that a test
# whose outcome depends on the CPU's vector kernels (AVX2, AVX-512) fails here, not on the
# next machine.
test: $(STAMP) lint
	$(PY) -m pytest -q
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q -m kernels -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/bench_spine.py
