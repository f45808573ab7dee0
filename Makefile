# fastuda: every target installs what it needs into .venv first.
#
#   make demo    the main job on its default (see README.md)
#   make test    the test suite (CPU + Triton-interpreter tiers; CUDA tier when a GPU is present)
#   make test-latest  the test suite against the newest releases (own venv, .venv-latest, no pins)
#   make test-oldest  the test suite against the oldest supported set (.venv-oldest,
#                constraints-oldest.txt: torch 2.11, triton 3.6, transformers 5.17, on python3.12)
#   make bench   the kernel benchmarks (CPU-sized shapes without a GPU)
#   make gpu-check  CUDA tier + benchmarks at the real shapes (not yet timed on a GPU), table
#                appended to bench/RESULTS.md; skips without a GPU
#
# Variables: PYTHON (interpreter that creates .venv), VENV, PYTEST_ARGS, CONSTRAINTS (the pip
# constraints file of tested versions, default constraints.txt; empty: whatever pip resolves),
# FASTUDA_SKIP_CUDA_BUILD (default: 1 when no NVIDIA GPU is visible: the CUDA
# kernels are not compiled where they cannot run, which keeps a fresh `make test`
# minutes shorter; a plain `pip install --no-build-isolation -e .` compiles them
# whenever nvcc is found, and fastuda refuses a CPU-only build on a GPU machine).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=
CONSTRAINTS ?= constraints.txt
# the GPU machines' Python for the oldest set: python3.12 if it runs (a pyenv shim may not), else
# pyenv's 3.12, else python3
PYTHON_OLDEST ?= $(firstword $(shell for p in python3.12 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12; \
	do "$$p" -c "" 2>/dev/null && echo "$$p"; done) python3)
# every install goes through the tested pins (-c: a pin applies only where the package is needed)
INSTALL := $(PIP) install $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) $(UPGRADE)
# a GPU: nvidia-smi lists one, or (containers without nvidia-smi) the driver's device node exists
HAS_GPU := $(shell (nvidia-smi -L || test -e /dev/nvidia0) >/dev/null 2>&1 && echo 1 || echo 0)
FASTUDA_SKIP_CUDA_BUILD ?= $(if $(filter 1,$(HAS_GPU)),0,1)
export FASTUDA_SKIP_CUDA_BUILD
# one stamp per build flavour: a venv built CPU-only rebuilds once a GPU shows up
STAMP := $(VENV)/.fastuda-installed-skipcuda$(FASTUDA_SKIP_CUDA_BUILD)

.PHONY: install demo test test-latest test-oldest bench gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(INSTALL) --upgrade pip setuptools wheel ninja

# torch first (the CUDA build from PyPI; it also runs on CPU), then fastuda
# itself, built against that torch (hence --no-build-isolation). A new
# constraints file reinstalls.
$(STAMP): $(PY) setup.py $(CONSTRAINTS) $(wildcard csrc/*/*.cpp csrc/*/*.cu csrc/*/*.h)
	$(INSTALL) torch torchvision timm triton
	$(INSTALL) --no-build-isolation -e ".[dev]"
	rm -f $(VENV)/.fastuda-installed*
	touch $(STAMP)

install: $(STAMP)

# source-only vs DAFormer-style UDA on synthetic two-domain scenes (CPU, minutes)
demo: $(STAMP)
	$(PY) -m fastuda.train_demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

# the newest releases, upgraded on every run (a new day's resolve), in their own venv
test-latest:
	rm -f .venv-latest/.fastuda-installed*
	$(MAKE) test VENV=.venv-latest CONSTRAINTS= UPGRADE="--upgrade --upgrade-strategy eager"

test-oldest:
	$(MAKE) test VENV=.venv-oldest CONSTRAINTS=constraints-oldest.txt PYTHON="$(PYTHON_OLDEST)"

bench: $(STAMP)
	mkdir -p .benchmarks
	$(PY) -m pytest bench --benchmark-json=.benchmarks/bench.json $(PYTEST_ARGS)
	$(PY) bench/report.py .benchmarks/bench.json

gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

clean:
	rm -rf build dist *.egg-info fastuda/_C*.so .pytest_cache .benchmarks
