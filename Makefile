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

# The tests marked `kernels` run a second time on portable CPU kernels, so that a test whose
# outcome depends on the CPU's vector kernels (AVX2, AVX-512) fails here, not on the next
# machine: torch's own (ATEN_CPU_CAPABILITY), MKL's GEMM (MKL_CBWR=COMPATIBLE), numpy's
# OpenBLAS (OPENBLAS_CORETYPE) and FAISS's distance kernels (FAISS_SIMD_LEVEL).
KERNELS = ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE OPENBLAS_CORETYPE=Prescott \
	FAISS_SIMD_LEVEL=NONE

test: $(STAMP) lint
	$(PY) -m pytest -q
	$(KERNELS) $(PY) -m pytest -q -m kernels -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/bench_spine.py
