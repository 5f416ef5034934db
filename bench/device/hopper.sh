#!/usr/bin/env bash
# One sm90 GPU, one call (~8 min): the hopper kernel's configs and the persistent candidate
# (check + time), the GPU kernel tests (the 8-bit variants' are bench/device/fp8.sh's), then
# ringsp_bench.attn_kernels and ringsp_bench.ring_rank with the hopper rows; measured dispatch
# choices land in OUT/cache.
# Usage (repo root): bash bench/device/hopper.sh OUTDIR
set -uo pipefail
out=${1:?usage: bash bench/device/hopper.sh OUTDIR}
mkdir -p "$out/cache"
export PYTHONUNBUFFERED=1 RINGSP_ERR_LOG="$out/errors.jsonl" RINGSP_CACHE_DIR="$out/cache" TRITON_CACHE_DIR=/tmp/tcache
log="$out/log.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$log"
timeout 150 python3 setup.py -q build_ext --inplace > /tmp/build.txt 2>&1 || tail -5 /tmp/build.txt | tee -a "$log"
v="$out/hopper_variants.json"
timeout 200 python3 -m ringsp_bench.hopper_variants --json "$v" --reps 30 --timeout 40 2>&1 | tee -a "$log"
echo "### tests/kernels/test_hopper_gpu.py tests/bench/test_hopper_persistent.py" | tee -a "$log"
timeout 120 python3 -m pytest tests/kernels/test_hopper_gpu.py tests/bench/test_hopper_persistent.py -k "not q8" -q -p no:cacheprovider -rfE 2>&1 | tail -12 | tee -a "$log"
timeout 100 python3 -m ringsp_bench.attn_kernels --reps 25 --rounds 1 --json "$out/kernels.json" 2>&1 | tee -a "$log"
echo "### tests/kernels/test_ops_gpu.py tests/kernels/test_cuda_ops.py" | tee -a "$log"
timeout 100 python3 -m pytest tests/kernels/test_ops_gpu.py tests/kernels/test_cuda_ops.py -q -p no:cacheprovider -rfE \
  2>&1 | tail -12 | tee -a "$log"
python3 -m ringsp_bench.worst_errors "$RINGSP_ERR_LOG" 2>&1 | tail -12 | tee -a "$log"
timeout 90 python3 -m ringsp_bench.ring_rank --reps 30 --json "$out/ring_rank.json" 2>&1 | tail -40 | tee -a "$log"
