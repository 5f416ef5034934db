#!/usr/bin/env bash
# One sm90 GPU, one call (~7 min): with the hopper path a dispatch candidate (hopper.AUTO),
#  1. GPU tests: the hopper path through its cached launcher (repeated launches, strided
#     state, scale < 0), its 8-bit variants against fp8_reference and float64
#     (test_hopper_gpu.py -k q8); the Triton 8-bit kernels' are fp8.sh's;
#  2. ringsp_bench.fp8 (bf16 cuDNN, ringsp bf16/int8/fp8, hopper int8/fp8, SageAttention);
#  3. the dispatch table re-measured with hopper among the candidates (ring + kernel classes)
#     into OUT/dispatch_native.json (merge into ringsp_kernels/tables/dispatch.json);
#  4. ringsp_bench.ring_rank, whose auto column now reads the table of step 3.
# Where the cached-launch test passes, steps 2-4 run with hopper.CACHED_LAUNCH = True (set in
# this machine's copy of the tree only; the log says which).
# Usage (repo root): bash bench/device/hopper_table.sh OUTDIR
set -uo pipefail
out=${1:?usage: bash bench/device/hopper_table.sh OUTDIR}
mkdir -p "$out/cache"
export PYTHONUNBUFFERED=1 RINGSP_ERR_LOG="$out/errors.jsonl" RINGSP_CACHE_DIR="$out/cache" TRITON_CACHE_DIR=/tmp/tcache
log="$out/log.txt"
t0=$(date +%s)
stamp() { echo "### $1 ($(( $(date +%s) - t0 )) s)" | tee -a "$log"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$log"
timeout 150 python3 setup.py -q build_ext --inplace > /tmp/build.txt 2>&1 || tail -5 /tmp/build.txt | tee -a "$log"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/sageattention-*.whl \
  2>&1 | tail -2 && export PYTHONPATH=/tmp/site
stamp "tests: hopper path (cached launch, dispatch), its 8-bit variants"
if timeout 60 python3 -m pytest tests/kernels/test_hopper_gpu.py -k cached -q -p no:cacheprovider -rfE 2>&1 \
    | tail -3 | tee -a "$log"; then
  sed -i 's/^CACHED_LAUNCH = False/CACHED_LAUNCH = True/' ringsp_kernels/cuda/hopper.py
  echo "cached-launch test passed: hopper.CACHED_LAUNCH = True for the rest of this run" | tee -a "$log"
fi
timeout 140 python3 -m pytest tests/kernels/test_hopper_gpu.py -k "q8 or strided or negative" \
  -q -p no:cacheprovider -rfE -s 2>&1 | grep --line-buffered -E "^hopper (int8|fp8)|passed|failed|^FAILED|^ERROR|Error" \
  | tee -a "$log"
stamp "bench: 8-bit"
timeout 90 python3 -m ringsp_bench.fp8 --json "$out/fp8.json" --reps 40 --rounds 1 2>&1 | grep --line-buffered -v "^ringsp: " | tee -a "$log"
stamp "tune: native classes with the hopper candidate"
timeout 100 python3 -m ringsp_kernels.cuda.tune --set ring,kernels --force --out "$out/dispatch_native.json" 2>&1 \
  | tail -40 | tee -a "$log"
stamp "bench: ring_rank"
timeout 50 python3 -m ringsp_bench.ring_rank --reps 20 --rounds 1 --json "$out/ring_rank.json" 2>&1 | grep --line-buffered -v "^ringsp: " | tee -a "$log"
stamp "done"
