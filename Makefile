# Two entry points for a fresh machine (see README.md):
#   make demo   set everything up, then open napari with the plugin and the sample video
#   make test   set everything up (venv + system packages for a virtual display), run all tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Without an NVIDIA GPU, pin the CPU build of torch (an unpinned torch pulls GBs of CUDA
# packages); with one, take the default (CUDA) build.
ifeq ($(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu),gpu)
TORCH_SPEC ?= torch
else
TORCH_SPEC ?= torch==2.13.0
endif

.PHONY: demo test venv system-deps lint sample-data docs-images clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 needed, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[all,testing]"
	touch $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

# DEMO_ARGS="--screenshot docs/images/demo.png" saves a picture of the window and quits.
demo: venv system-deps
	$(VENV)/bin/napari-diffseg demo $(DEMO_ARGS)

test: venv system-deps
	$(VENV)/bin/ruff check napari_diffseg tests scripts benchmarks
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check napari_diffseg tests scripts benchmarks

# Regenerate the committed sample (sample_data/) and the pictures in docs/.
sample-data: venv
	$(PY) scripts/make_sample_data.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
