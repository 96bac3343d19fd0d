#!/usr/bin/env bash
# Run HERE (a machine with PyPI), once, before the GPU calls: downloads the wheels the GPU machine
# lacks into .whl/ (ignored by git) and splits the 255.6 MB onnxruntime-gpu wheel into parts under
# 60 MiB, since one device call carries at most 64 MiB. See benchmarks/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}   # CUDA 13 build (shared/NOTES.md)
PART_MIB=${PART_MIB:-55}
mkdir -p .whl/small .whl/parts
download() {  # the exact line from the device README, with a destination folder
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$@"
}
# Small pure-Python wheels export needs and the GPU image lacks (their own needs are there).
download .whl/small onnxslim==0.1.98 onnxconverter-common==1.16.0
download .whl "$ORT_GPU"
wheel=$(ls .whl/onnxruntime_gpu-*.whl | head -n 1)
name=$(basename "$wheel")
rm -f .whl/parts/*
split -b "${PART_MIB}M" -d -a 2 "$wheel" ".whl/parts/$name.part-"
(cd .whl && sha256sum "$name" > "parts/$name.sha256")
rm -f "$wheel"
ls -l .whl/small .whl/parts
echo "carry one part per device call: $(ls .whl/parts/*.part-* | tr '\n' ' ')"
