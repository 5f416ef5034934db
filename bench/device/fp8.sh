#!/usr/bin/env bash
# One GPU (H100/H200): the 8-bit attention precisions ("fp8", "int8").
#  - tests/kernels/test_fp8_gpu.py: the Triton kernels against fp8_reference and float64
#    (every kernel config, chains mixing precisions, NaN padding, empty blocks), then the
#    CPU tests of test_fp8.py, and the Hopper kernel's 8-bit variants (test_hopper_gpu.py -k "int8 or fp8");
#  - python -m ringsp_kernels.cuda.tune --precision fp8,int8: the 8-bit classes of the kernel
#    set measured into OUT/dispatch_q8.json (merge into ringsp_kernels/tables/dispatch.json);
#  - ringsp_bench.fp8: TFLOP/s and accuracy of ringsp fp8/int8 (attn_fwd, 4-step chain) next to
#    ringsp bf16, cuDNN bf16 and SageAttention 1.0.6 on the five shapes of ringsp_bench.attn_kernels.
# The tests compile every kernel variant the benchmark uses (Triton's disk cache carries them
# over). Expected: build (if not already built on this machine), <= 150 s tests, <= 150 s benchmark.
# Usage: bash bench/device/fp8.sh OUTDIR
set -uo pipefail
out=${1:?usage: bash bench/device/fp8.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1 || true
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/sageattention-*.whl \
  2>&1 | tail -2 && export PYTHONPATH=/tmp/site
echo "setup: $(( $(date +%s) - t0 )) s" | tee "$out/fp8_times.txt"

t1=$(date +%s)
timeout 150 python3 -m pytest tests/kernels/test_fp8_gpu.py tests/kernels/test_fp8.py tests/kernels/test_hopper_gpu.py -k "int8 or fp8" -v -p no:cacheprovider -rfE \
  --durations=8 > "$out/fp8_tests.txt" 2>&1 || true
echo "tests: $(( $(date +%s) - t1 )) s" | tee -a "$out/fp8_times.txt"

t3=$(date +%s)
timeout 150 python3 -m ringsp_kernels.cuda.tune --set kernels --precision fp8,int8 --cache-dir "$out/cache" \
  --out "$out/dispatch_q8.json" > "$out/fp8_tune.txt" 2>&1 || true
echo "tune: $(( $(date +%s) - t3 )) s" | tee -a "$out/fp8_times.txt"

t2=$(date +%s)
timeout 150 python3 -m ringsp_bench.fp8 --json "$out/fp8.json" --reps 80 > "$out/fp8_bench.txt" 2>&1 || true
echo "bench: $(( $(date +%s) - t2 )) s" | tee -a "$out/fp8_times.txt"

echo "=== tests: $(grep -c " PASSED" "$out/fp8_tests.txt") passed (per-test lines), failures and the last line: ==="
grep -E "^(FAILED|ERROR)| FAILED| ERROR" "$out/fp8_tests.txt" | cut -c1-220 | tail -20
tail -1 "$out/fp8_tests.txt"
echo "=== benchmark ==="
grep -v "^ringsp: " "$out/fp8_bench.txt" | tail -60
echo "=== tune ===" && tail -8 "$out/fp8_tune.txt"
