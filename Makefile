# Two commands from a fresh clone:  make demo  |  make test   (make check: the fast tier, for every edit)
# Both create .venv, install torch 2.13.0 (CPU build) first, then optkit with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# pytest-xdist processes: one per core of the 2-core machines the suite is sized for
WORKERS ?= 2

.PHONY: install demo test check bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: a bare 'torch' requirement could pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/optkit run recipes/digits_cnn_cpu.yaml

test: install
	$(BIN)/python -m pytest -q -n $(WORKERS)

# the fast tier: every test not marked slow (end-to-end recipes, real clusters, subprocess runs), in-process
check: install
	$(BIN)/python -m pytest -q -n $(WORKERS) -m "not slow"

bench: install
	$(BIN)/python benchmarks/foundation.py

clean:
	rm -rf $(VENV) optkit-out .pytest_cache
