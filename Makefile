# Two commands do all set-up on a fresh machine (README):
#   make demo   - the main job on the embedded default dataset (Fashion-MNIST)
#   make test   - the test suite
# Both create .venv, install the pinned stack (requirements/constraints.txt), build mmcv once (cached wheel,
# tools/build_mmcv.sh) and install the Fashion-MNIST Debian package.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.shiftaddaug-installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

CORE_STAMP := $(VENV)/.shiftaddaug-core-installed
LINT_STAMP := $(VENV)/.shiftaddaug-lint-installed

.PHONY: all setup setup-core seg-data test test-core test-fast lint demo bench dataset clean

all: test

setup: $(STAMP) dataset

$(STAMP): $(CONSTRAINTS) setup.cfg pyproject.toml tools/build_mmcv.sh
	@echo "[setup] creating $(VENV) and installing the pinned stack"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) setuptools wheel torch torchvision timm mmengine numpy scipy \
		matplotlib optuna ftfy regex pytest pytest-timeout onnx onnxruntime
	tools/build_mmcv.sh $(PY)
	$(PIP) install -q -c $(CONSTRAINTS) mmsegmentation
	$(MAKE) --no-print-directory seg-data
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import mmcv.ops, mmseg, timm, shiftaddaug_plugin; print('[setup] OK: mmcv', mmcv.__version__, 'mmseg', mmseg.__version__, 'timm', timm.__version__)"
	touch $(STAMP)

# the stack without mmcv / mmsegmentation (no mmcv build): enough for every test not marked `mmseg`
$(CORE_STAMP): $(CONSTRAINTS) setup.cfg pyproject.toml
	@echo "[setup-core] creating $(VENV) and installing the stack without mmcv/mmseg"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) setuptools wheel torch torchvision timm numpy scipy matplotlib optuna \
		pytest pytest-timeout onnx onnxruntime
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(CORE_STAMP)

setup-core: $(CORE_STAMP) dataset

# the wheels that ship the real segmentation data (docs/segmentation.md): nilearn (MNI152 template + tissue maps)
# and stardist (nuclei image + mask) only for their files (--no-deps: no scikit-learn / TensorFlow), read with
# nibabel and tifffile
seg-data:
	$(PIP) install -q -c $(CONSTRAINTS) nibabel tifffile
	$(PIP) install -q --no-deps -c $(CONSTRAINTS) nilearn stardist

$(LINT_STAMP): $(CONSTRAINTS) $(CORE_STAMP)
	$(PIP) install -q -c $(CONSTRAINTS) ruff mypy import-linter
	touch $(LINT_STAMP)

# ruff (lint + import order), import-linter (dependencies point one way), mypy (configuration in pyproject.toml)
lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check shiftaddaug_plugin tools benchmarks tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

dataset:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "[setup] Fashion-MNIST present in $(FMNIST_DIR)"; \
	else \
		echo "[setup] installing Debian package dataset-fashion-mnist"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# the tests that need no mmcv / mmsegmentation, without building mmcv
test-core: setup-core
	$(PY) -m pytest -m "not mmseg" $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/ops.py --json benchmarks/results/ops.json
	$(PY) benchmarks/hybrid.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/profile_step.py
	$(PY) benchmarks/first_step.py
	$(PY) benchmarks/integer_inference.py
	$(PY) benchmarks/gpu_check.py

demo: setup
	$(PY) tools/demo.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
