# Two commands for a newcomer: `make demo` and `make test`.
# Each creates .venv when missing and installs the package with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local torch build; changed only if you want another torch in the venv.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out

.PHONY: install test demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/e2y-visual generate tests/data/demo.csv --out $(DEMO_OUT)/hdf5 --preview --workers 1
	@echo "Wrote $(DEMO_OUT)/hdf5: HDF5 files, previews/*.png and manifest.json"

# CPU by default (small model sizes); on a GPU: make bench BENCH_ARGS="--device cuda --batch 64"
BENCH_ARGS ?= --device cpu --small
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(DEMO_OUT) bench_out .pytest_cache
