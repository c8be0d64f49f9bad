#!/usr/bin/env bash
# The one prepared GPU check for the Pallas flash-attention kernel (issue 6), a few minutes:
#   1. versions and device;
#   2. the kernel correctness sweep, natively compiled on the device (dlkit.extras.flash_check:
#      every mask kind, odd lengths, Sq != Sk, head dims 32-256, GQA, fp32/bf16/fp16, gradients);
#   3. (RUN_PYTEST=1 and pytest installed) tests/kernels/test_flash_attention.py on the device;
#   4. the benchmark table (benchmarks/attention.py), the issue's goal points first, within
#      BENCH_BUDGET seconds (default 180), then a launch-parameter sweep of the kernel (S=4096);
#   5. jax's own Mosaic GPU attention example at the goal points (informative; RUN_MGPU=0 skips).
# Expected ~6 minutes on an H200 after start-up; every step is time-limited (worst case ~9 min),
# so run it with a 600 s limit.
# Results go to $OUT if set, else benchmarks/out. Needs jax (+ flax/optax: `import dlkit`).
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --smoke    # CPU, tiny shapes, interpret mode (tested in CI)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/out}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SMOKE=""
if [ "${1:-}" = "--smoke" ]; then
  SMOKE="--smoke"
  export JAX_PLATFORMS=cpu
fi
if ! "$PY" -c "import jax, flax, optax" 2>/dev/null; then
  echo "gpu_check: $PY cannot import jax, flax and optax; activate the venv or set PYTHON=/path/to/python" >&2
  exit 2
fi
status=0

echo "== 1. environment" | tee "$OUT_DIR/env.txt"
"$PY" -c "import sys, jax; print(sys.version.split()[0], 'jax', jax.__version__, jax.devices())" \
  2>&1 | tee -a "$OUT_DIR/env.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader 2>&1 | tee -a "$OUT_DIR/env.txt"

echo "== 2. correctness on the device (fp32 reference at highest matmul precision)"
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 150 "$PY" benchmarks/attention.py --check $SMOKE \
  --json "$OUT_DIR/flash_check.json" 2>&1 | tee "$OUT_DIR/flash_check.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "correctness FAILED"; status=1; }

if [ "${RUN_PYTEST:-0}" = 1 ] && "$PY" -c "import pytest" 2>/dev/null; then
  echo "== 3. pytest tests/kernels/test_flash_attention.py on the device"
  JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}" JAX_DEFAULT_MATMUL_PRECISION=highest timeout 300 \
    "$PY" -m pytest tests/kernels/test_flash_attention.py -q -x -p no:cacheprovider 2>&1 \
    | tail -20 | tee "$OUT_DIR/pytest.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "pytest FAILED"; status=1; }
fi

echo "== 4. benchmark table, then the pallas launch sweep"
timeout 240 "$PY" benchmarks/attention.py $SMOKE --time-budget "${BENCH_BUDGET:-180}" \
  --json "$OUT_DIR/attention.json" --markdown "$OUT_DIR/attention.md" 2>&1 \
  | tee "$OUT_DIR/attention.txt" | grep -v '^{'
[ "${PIPESTATUS[0]}" = 0 ] || { echo "benchmark FAILED"; status=1; }
SWEEP_BUDGET=60; [ -n "$SMOKE" ] && SWEEP_BUDGET=5
timeout 90 "$PY" benchmarks/attention.py $SMOKE --sweep --seqs 4096 --head-dims 128 \
  --time-budget "$SWEEP_BUDGET" --json "$OUT_DIR/attention_sweep.json" 2>&1 \
  | tee "$OUT_DIR/attention_sweep.txt" | grep -v '^{'
[ "${PIPESTATUS[0]}" = 0 ] || { echo "sweep FAILED"; status=1; }
if [ -z "$SMOKE" ] && [ "${RUN_MGPU:-1}" = 1 ]; then  # informative only: never fails the check
  echo "== 5. jax's Mosaic GPU attention example at the goal points (the Hopper route)"
  timeout 100 "$PY" benchmarks/attention.py --impls pallas cudnn jax_mgpu --seqs 4096 16384 \
    --head-dims 128 --time-budget 50 --json "$OUT_DIR/attention_mgpu.json" \
    --markdown "$OUT_DIR/attention_mgpu.md" 2>&1 | tee "$OUT_DIR/attention_mgpu.txt" | grep -v '^{'
fi
echo "== done (status $status); results in $OUT_DIR"
exit $status
