#!/usr/bin/env bash
# The GPU benchmark matrix and the GPU tests, on any machine with an NVIDIA GPU (README.md
# beside this says what it needs and writes):
#   1. onnxruntime-gpu (GPU_PACKAGES) is installed into a --target folder that is put first on
#      PYTHONPATH, so it shadows the CPU onnxruntime the project's venv holds;
#   2. edgeport is used from this working tree (PYTHONPATH + generated entry points);
#   3. the GPU benchmark matrix (gpu_matrix.py): resnet18 first, then simple_cnn_bn;
#   4. pytest -m "gpu or tensorrt" with the time that is left of BUDGET_S.
# Results: $OUT/gpu-<card>/{gpu.json,gpu.md,gpu.csv,gpu.png,env.json,pytest.log,run.log}.
#
#   bash benchmarks/gpu/run.sh            # on the GPU machine
#   bash benchmarks/gpu/run.sh --dry-run  # on a CPU: the same steps except CUDA
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=$REPO/.venv/bin/python; fi
GPU_PACKAGES=${GPU_PACKAGES:-onnxruntime-gpu}  # pip requirements, installed without their deps
GPU_WHEELS=${GPU_WHEELS:-}  # a folder of wheels (fetch_wheels.sh) for a machine without PyPI
SITE=${SITE:-$REPO/runs/gpu-site}  # the GPU packages and edgeport's metadata
BUDGET_S=${BUDGET_S:-3600}  # the whole script
MATRIX_S=${MATRIX_S:-2400}  # the matrix's share; pytest gets the rest
MODELS=${MODELS:-resnet18,simple_cnn_bn}  # resnet18 first: it carries the headline
WORK=${WORK:-$REPO/runs/gpu-work}  # runs and bundles
T0=$(date +%s)

if [ "$DRY" = 1 ]; then
  slug=dry-run-cpu
  [ "$MODELS" = "resnet18,simple_cnn_bn" ] && MODELS=simple_cnn_bn  # resnet18 on a CPU is slow
  SITE=${SITE}-dry
else
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  slug=gpu-$(printf '%s' "${gpu:-unknown}" | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
fi
RES=${OUT:-$REPO/runs/gpu-out}/$slug
mkdir -p "$RES"

elapsed() { echo $(( $(date +%s) - T0 )); }
step() { printf '\n=== %s (t=%ss) ===\n' "$*" "$(elapsed)"; }

main() {
  step "machine"
  if [ "$DRY" = 0 ]; then nvidia-smi || echo "nvidia-smi failed"; fi
  "$PY" -V
  uname -srm
  nproc --all

  step "GPU packages: $GPU_PACKAGES"
  if [ "$DRY" = 1 ]; then
    echo "dry run: the CPU onnxruntime stays; nothing is installed"
  else
    local source=()
    [ -n "$GPU_WHEELS" ] && source=(--no-index --find-links "$GPU_WHEELS")
    # shellcheck disable=SC2086  # GPU_PACKAGES is a list of requirements
    "$PY" -m pip install -q --no-deps --no-compile --upgrade --target "$SITE" "${source[@]}" \
      $GPU_PACKAGES || echo "ERROR: pip install into $SITE failed; going on without it"
  fi

  step "edgeport from the working tree"
  "$PY" benchmarks/gpu/install_tree.py "$SITE"
  export PYTHONPATH="$SITE:$REPO/runtime/src:$REPO/train/src:$REPO/export/src${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$SITE/bin:$PATH"
  export PYTHONUNBUFFERED=1
  "$PY" - <<'PYEOF'
import importlib.metadata as md

import onnxruntime

import edgeport.runtime

print("onnxruntime", onnxruntime.__version__, "from", onnxruntime.__file__)
print("providers", onnxruntime.get_available_providers())
print("edgeport", edgeport.runtime.__version__, "from", edgeport.runtime.__file__)
for group in ("edgeport.commands", "edgeport.baselines", "edgeport.datasets"):
    print(group, sorted(ep.name for ep in md.entry_points(group=group)))
try:
    import torch

    print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())
except ImportError as exc:
    print("torch missing:", exc)
PYEOF
  edgeport --version

  step "GPU matrix (deadline $((MATRIX_S - 90)) s for starting work)"
  local dry_flag=()
  [ "$DRY" = 1 ] && dry_flag=(--dry-run)
  timeout --signal=INT "$((MATRIX_S + 30))" "$PY" benchmarks/gpu/gpu_matrix.py \
    --out "$RES" --work "$WORK" --models "$MODELS" --deadline-s "$((MATRIX_S - 90))" "${dry_flag[@]}"
  echo "gpu_matrix exit code $?"

  local left=$((BUDGET_S - $(elapsed) - 10))
  step "pytest -m 'gpu or tensorrt' (${left} s left)"
  if [ "$DRY" = 1 ]; then
    "$PY" -m pytest -m "gpu or tensorrt" --collect-only -q -p no:cacheprovider \
      2>&1 | tee "$RES/pytest.log" | tail -n 5
  elif [ "$left" -gt 30 ]; then
    timeout --signal=INT "$left" "$PY" -m pytest -m "gpu or tensorrt" -rA -q \
      -p no:cacheprovider 2>&1 | tee "$RES/pytest.log" | tail -n 40
    echo "pytest exit code ${PIPESTATUS[0]}"
  else
    echo "no time left for pytest" | tee "$RES/pytest.log"
  fi

  step "done"
  ls -l "$RES"
  grep -E "^(headline|error):" "$RES/run.log" || true
}

main "$@" 2>&1 | tee "$RES/run.log"
exit "${PIPESTATUS[0]}"
