#!/usr/bin/env bash
# Build mmcv 2.1.0 *with its compiled ops* from the PyPI sdist and install it into the given Python.
#
# Why: PyPI has no mmcv wheel for this torch; mmcv 2.1.0's setup.py hard-codes -std=c++17 while the
# torch 2.14 headers need C++20 (docs/ARCHITECTURE.md). We raise the flag, build once, keep the wheel in a cache
# directory OUTSIDE the repository and reuse it on every later set-up.
#
# Usage: tools/build_mmcv.sh [PYTHON]      (default: .venv/bin/python)
# Env:   SHIFTADDAUG_WHEEL_CACHE  cache dir (default: ~/.cache/shiftaddaug_plugin/wheels)
#        MAX_JOBS                 parallel compile jobs (default: number of cores)
set -euo pipefail
PY=${1:-.venv/bin/python}
VERSION=2.1.0
CACHE=${SHIFTADDAUG_WHEEL_CACHE:-$HOME/.cache/shiftaddaug_plugin/wheels}
TORCH_TAG=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# One cache sub-directory per (torch, python) pair: the compiled ops are ABI-bound to both.
WHEEL_DIR="$CACHE/mmcv-$VERSION-torch$TORCH_TAG-$PYTAG"
mkdir -p "$WHEEL_DIR"

check() { "$PY" -c 'import mmcv, mmcv.ops; print("mmcv", mmcv.__version__, "with compiled ops: OK")'; }

if "$PY" -c 'import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != "'$VERSION'")' 2>/dev/null; then
  echo "[build_mmcv] mmcv $VERSION with ops already installed."; exit 0
fi

wheel=$(ls "$WHEEL_DIR"/mmcv-$VERSION-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "[build_mmcv] No cached wheel in $WHEEL_DIR."
  echo "[build_mmcv] Building mmcv $VERSION with compiled ops from the PyPI sdist (C++ standard raised to C++20)."
  echo "[build_mmcv] The FIRST build takes 15-30 minutes on 2 cores; later set-ups reuse the cached wheel."
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$work" "mmcv==$VERSION" >/dev/null
  tar -xzf "$work"/mmcv-$VERSION.tar.gz -C "$work"
  src="$work/mmcv-$VERSION"
  grep -q -- '-std=c++17' "$src/setup.py" || { echo "[build_mmcv] ERROR: '-std=c++17' not found in mmcv setup.py; the patch no longer applies." >&2; exit 1; }
  sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  # mmcv's setup.py needs setuptools<70 while torch needs >=77: downgrade only for the build, then restore.
  old_st=$("$PY" -c 'import setuptools; print(setuptools.__version__)')
  trap '"$PY" -m pip install -q --no-deps "setuptools==$old_st" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  "$PY" -m pip install -q --no-deps "setuptools<70" wheel ninja 2>/dev/null
  start=$(date +%s)
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$PY" -m pip wheel --no-deps --no-build-isolation -w "$work/dist" "$src"
  mv "$work"/dist/mmcv-$VERSION-*.whl "$WHEEL_DIR/"
  wheel=$(ls "$WHEEL_DIR"/mmcv-$VERSION-*.whl | head -n1)
  echo "[build_mmcv] Built $wheel in $(( $(date +%s) - start )) s."
else
  echo "[build_mmcv] Using cached wheel $wheel"
fi
"$PY" -m pip install --no-deps --force-reinstall -q "$wheel"
# mmcv's runtime dependencies (addict, yapf, opencv, ...) are installed from the constraints file by the Makefile.
check
