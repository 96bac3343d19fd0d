#!/usr/bin/env bash
# The GPU proof, in one device call on a machine with an NVIDIA GPU (see README.md beside this):
#   1. onnxruntime-gpu (joined from the parts ferried by earlier calls) and the small wheels
#      export needs are installed into a --target folder that shadows the CPU onnxruntime;
#   2. edgeport is used from this working tree (PYTHONPATH + generated entry points);
#   3. the GPU benchmark matrix (gpu_matrix.py): resnet18 first, then simple_cnn_bn;
#   4. pytest -m "gpu or tensorrt" with whatever time is left.
# Results: $OUT/gpu-<card>/{gpu.json,gpu.md,gpu.csv,gpu.png,env.json,pytest.log,run.log}.
#
#   bash benchmarks/gpu/run.sh            # on the GPU machine
#   bash benchmarks/gpu/run.sh --dry-run  # here, on the CPU: the same steps except CUDA
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
PY=${PYTHON:-python3}
if [ "$DRY" = 1 ] && [ -x .venv/bin/python ]; then PY=$REPO/.venv/bin/python; fi
STASH=${STASH:-/tmp/edgeport-wheels}
SITE=${SITE:-/tmp/edgeport-site}
BUDGET_S=${BUDGET_S:-450}  # the whole script; give the device call a larger timeout_s (540)
MATRIX_S=${MATRIX_S:-300}  # the matrix's share; pytest gets the rest
MODELS=${MODELS:-resnet18,simple_cnn_bn}  # resnet18 first: it carries the headline
WORK=${WORK:-/tmp/edgeport-gpu-work}      # runs and bundles
T0=$(date +%s)

if [ "$DRY" = 1 ]; then
  slug=dry-run-cpu
  [ "$MODELS" = "resnet18,simple_cnn_bn" ] && MODELS=simple_cnn_bn  # resnet18 on 2 CPUs is slow
  SITE=${SITE}-dry
  STASH=${STASH}-dry
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

  step "wheels"
  mkdir -p "$STASH"
  STASH="$STASH" LINK="$DRY" bash benchmarks/gpu/stash_part.sh
  shopt -s nullglob
  local sums wheel
  for sums in "$STASH"/*.sha256; do
    wheel=$(basename "$sums" .sha256)
    if [ "$DRY" = 1 ]; then  # check the parts without writing a 255 MB file
      if [ "$(cat "$STASH/$wheel".part-* | sha256sum | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$sums")" ]; then
        echo "$wheel: the parts join to the right sha256 (dry run: not joined)"
      else
        echo "ERROR: $wheel: parts incomplete: $(cd "$STASH" && ls "$wheel".part-* | tr '\n' ' ')"
      fi
      continue
    fi
    if [ ! -f "$STASH/$wheel" ]; then
      cat "$STASH/$wheel".part-* > "$STASH/$wheel"
    fi
    if (cd "$STASH" && sha256sum -c "$wheel.sha256"); then
      echo "joined $wheel"
    else
      echo "ERROR: $wheel is incomplete; parts here: $(cd "$STASH" && ls "$wheel".part-* | tr '\n' ' ')"
      echo "ERROR: ferry the missing parts (README.md), then run again; going on without it"
      rm -f "$STASH/$wheel"
    fi
  done
  local wheels=("$STASH"/*.whl)
  if [ "$DRY" = 1 ]; then  # a cp312 onnxruntime-gpu wheel does not install here: joined only
    wheels=("$STASH"/onnxslim-*.whl "$STASH"/onnxconverter_common-*.whl)
  fi
  if [ "${#wheels[@]}" -gt 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${wheels[@]}" || echo "ERROR: pip install into $SITE failed"
  fi
  shopt -u nullglob

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
      -p no:cacheprovider --basetemp=/tmp/edgeport-pytest 2>&1 | tee "$RES/pytest.log" | tail -n 40
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
