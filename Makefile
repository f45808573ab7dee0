# fastuda: every target installs what it needs into .venv first.
#
#   make demo    the main job on its default (see README)
#   make test    the test suite (CPU + Triton-interpreter tiers; CUDA tier when a GPU is present)
#   make bench   the kernel benchmarks (CPU-sized shapes without a GPU)
#   make gpu-check  CUDA tier + benchmarks at the real shapes (~8 min on one H200), table
#                appended to bench/RESULTS.md; skips without a GPU
#
# Variables: PYTHON (interpreter that creates .venv), VENV, PYTEST_ARGS,
# FASTUDA_SKIP_CUDA_BUILD (default: 1 when no NVIDIA GPU is visible: the CUDA
# kernels are not compiled where they cannot run, which keeps a fresh `make test`
# minutes shorter; a plain `pip install --no-build-isolation -e .` compiles them
# whenever nvcc is found, and fastuda refuses a CPU-only build on a GPU machine).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=
# a GPU: nvidia-smi lists one, or (containers without nvidia-smi) the driver's device node exists
HAS_GPU := $(shell (nvidia-smi -L || test -e /dev/nvidia0) >/dev/null 2>&1 && echo 1 || echo 0)
FASTUDA_SKIP_CUDA_BUILD ?= $(if $(filter 1,$(HAS_GPU)),0,1)
export FASTUDA_SKIP_CUDA_BUILD
# one stamp per build flavour: a venv built CPU-only rebuilds once a GPU shows up
STAMP := $(VENV)/.fastuda-installed-skipcuda$(FASTUDA_SKIP_CUDA_BUILD)

.PHONY: install demo test bench gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel ninja

# torch first (the CUDA build from PyPI; it also runs on CPU), then fastuda
# itself, built against that torch (hence --no-build-isolation).
$(STAMP): $(PY) setup.py $(wildcard csrc/*/*.cpp csrc/*/*.cu csrc/*/*.h)
	$(PY) -c "import torch, torchvision, timm, triton" 2>/dev/null || $(PIP) install torch torchvision timm triton
	$(PIP) install --no-build-isolation -e ".[dev]"
	rm -f $(VENV)/.fastuda-installed*
	touch $(STAMP)

install: $(STAMP)

# source-only vs DAFormer-style UDA on synthetic two-domain scenes (CPU, minutes)
demo: $(STAMP)
	$(PY) -m fastuda.train_demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

bench: $(STAMP)
	mkdir -p .benchmarks
	$(PY) -m pytest bench --benchmark-json=.benchmarks/bench.json $(PYTEST_ARGS)
	$(PY) bench/report.py .benchmarks/bench.json

gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

clean:
	rm -rf build dist *.egg-info fastuda/_C*.so .pytest_cache .benchmarks
