#!/usr/bin/env bash
# For a GPU machine without access to PyPI: run this on a machine with it, copy the folder it
# fills (.whl/gpu, ignored by git) to the GPU machine, and run there
#   GPU_WHEELS=.whl/gpu bash benchmarks/gpu/run.sh
# The wheels are for the GPU machine's Python and platform (PY_VERSION, PLATFORM), not this one's.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
GPU_PACKAGES=${GPU_PACKAGES:-onnxruntime-gpu}  # as run.sh installs them
PY_VERSION=${PY_VERSION:-3.12}
PLATFORM=${PLATFORM:-manylinux_2_28_x86_64}
DEST=${DEST:-.whl/gpu}
mkdir -p "$DEST"
# shellcheck disable=SC2086  # GPU_PACKAGES is a list of requirements
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
  --implementation cp --platform "$PLATFORM" --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DEST" $GPU_PACKAGES
ls -l "$DEST"
