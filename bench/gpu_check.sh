#!/usr/bin/env bash
# The GPU check: run it first whenever a GPU machine is lent, and commit the report folder it writes.
# On an H100 or H200 it should end within 8 minutes: the GPU-only tests, then `nst-engine bench --quick` on CUDA
# at 512 px (the step case's CUDA graph vs eager and bf16 / TF32 vs fp32, and time to quality against the
# textbook baseline, both on the GPU).
#
#   bash bench/gpu_check.sh --prepare          here, once: wheels the GPU machine lacks, sample images -> .gpu-carry/
#   bash bench/gpu_check.sh OUT                on the GPU machine, from the repository root (carry .gpu-carry)
#   bash bench/gpu_check.sh OUT --dry-run      anywhere (CI runs it): every step, each with a CPU-sized stand-in
set -euo pipefail
tests_failed=0
cd "$(dirname "$0")/.."
CARRY=.gpu-carry
export PYTHONUNBUFFERED=1

if [ "${1:-}" = "--prepare" ]; then
  # The GPU machine has torch (with sympy), onnx (with ml_dtypes), onnxruntime, opencv, typer, rich and
  # matplotlib (with pillow), and no package index: these are the pure-Python or abi3 wheels it lacks.
  mkdir -p "$CARRY/wheels" "$CARRY/images"
  python -m pip download -q --no-deps --only-binary=:all: -d "$CARRY/wheels" \
    onnxscript onnx-ir safetensors platformdirs
  cp ../shared/images/content_tubingen.jpg ../shared/images/style_starry_night.jpg "$CARRY/images/"
  du -sh "$CARRY"
  exit 0
fi

OUT=${1:?usage: bash bench/gpu_check.sh OUT [--dry-run] | --prepare}
DRY=${2:-}
if [ -n "$DRY" ] && [ "$DRY" != "--dry-run" ]; then
  echo "error: unknown option '$DRY'; the second argument can only be --dry-run" >&2
  exit 2
fi
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
step() { echo "== $*" | tee -a "$LOG"; }
started=$(date +%s)

step "install"
if [ -z "$DRY" ]; then
  for wheel in "$CARRY"/wheels/*.whl; do
    [ -e "$wheel" ] || continue
    python -m pip install -q --no-index --no-deps "$wheel" 2>&1 | tee -a "$LOG" || echo "skipped $wheel" | tee -a "$LOG"
  done
  python -m pip install -q --no-deps -e . 2>&1 | tee -a "$LOG"
fi
python -c "import nst_engine.cli, nst_engine.export.runtime" 2>&1 | tee -a "$LOG"

step "device"
python - <<'PY' 2>&1 | tee "$OUT/device.txt" | tee -a "$LOG"
import onnxruntime as ort
import torch
cuda = torch.cuda.is_available()
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("device:", torch.cuda.get_device_name(0) if cuda else "none (CPU only)")
print("onnxruntime", ort.__version__, ort.get_available_providers())
PY

step "GPU-only tests"
if [ -z "$DRY" ]; then
  # A failure is reported and the benchmarks still run, so the lease always yields a report; the exit code says.
  python -m pytest -q -p no:cacheprovider tests/test_step.py tests/test_precision.py 2>&1 | tee -a "$LOG" \
    || { tests_failed=1; echo "GPU tests FAILED (see above)" | tee -a "$LOG"; }
else
  collected=$(python -m pytest -q -p no:cacheprovider --collect-only -k cuda tests/test_step.py | grep -c "::" || true)
  echo "would run $collected CUDA tests" | tee -a "$LOG"
  [ "$collected" -ge 2 ]
fi

IMAGES="$CARRY/images"
[ -d "$IMAGES" ] || IMAGES=../shared/images
step "bench"
if [ -z "$DRY" ]; then
  nst-engine bench --quick --case forward --case step --case ttq --ttq-size 512 \
    --content "$IMAGES/content_tubingen.jpg" --style "$IMAGES/style_starry_night.jpg" -o "$OUT" 2>&1 | tee -a "$LOG"
else
  # The same command's options must exist; the cheapest case shows the report is still written.
  # Read whole first: with pipefail, grep -q closing the pipe early would fail the command that is still writing.
  bench_help=$(nst-engine bench --help)
  grep -q -- "--ttq-size" <<<"$bench_help"
  nst-engine bench --quick --case cache \
    --content "$IMAGES/content_tubingen.jpg" --style "$IMAGES/style_starry_night.jpg" -o "$OUT" 2>&1 | tee -a "$LOG"
fi
test -s "$OUT/report.md"
step "done in $(( $(date +%s) - started )) s: $OUT/report.md"
exit "$tests_failed"
