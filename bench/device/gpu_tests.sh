#!/usr/bin/env bash
# One GPU: every GPU test module (kernels, 8-bit kernels, candidate Hopper kernels, the ring's
# CUDA stream/event path through NCCL on one rank, compile), then the worst achieved errors.
# Expected ~200 s on an H200 (build ~40 s). Usage (repo root): bash bench/device/gpu_tests.sh OUTDIR
set -uo pipefail
out=${1:?usage: bash bench/device/gpu_tests.sh OUTDIR}
mkdir -p "$out"
log="$out/gpu_tests.txt"
export PYTHONUNBUFFERED=1 RINGSP_ERR_LOG=/tmp/ringsp-test-errors.jsonl
rm -f "$RINGSP_ERR_LOG"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
timeout 150 python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -2 | tee -a "$log"
for t in tests/kernels/test_ops_gpu.py tests/kernels/test_fp8_gpu.py \
         tests/parallel/test_usp_gpu.py tests/models/test_compile_gpu.py; do
  [ -f "$t" ] || t=$(ls tests/*/"$(basename "$t")" 2>/dev/null | head -1)
  [ -n "$t" ] || continue
  echo "### $t" | tee -a "$log"
  timeout 200 python3 -m pytest "$t" -q -p no:cacheprovider -rfE 2>&1 | tail -15 | tee -a "$log" || true
done
echo "### worst achieved errors (per check kind, dtype)" | tee -a "$log"
python3 -m ringsp_bench.worst_errors "$RINGSP_ERR_LOG" 2>&1 | tee -a "$log" || true
