#!/usr/bin/env bash
# One GPU (Hopper): candidate fused-ring-step kernels (bench/kernel_variants.py's `candidates`)
# side by side with the current Triton kernel and cuDNN.
#  1. build the package (the ops library the kernels' package imports);
#  2. ringsp_bench.kernel_variants: compiles every kernel first in parallel processes, checks each
#     candidate against cuDNN, times attn_fwd and the fused chain on the five kernel shapes and
#     the per-rank ring shapes (JSON + log under OUTDIR).
# Usage: bash bench/device/kernel_variants.sh OUTDIR     (budget: ~200 s on an H200)
set -uo pipefail
out=${1:-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -2
echo "# build done at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m ringsp_bench.kernel_variants --json "$out/kernel_variants.json" --jobs 12 \
  > "$out/kernel_variants.txt" 2>&1 || echo "kernel_variants.py exited with $?" >> "$out/kernel_variants.txt"
echo "# bench done at $(( $(date +%s) - t0 )) s"
grep -E "^# precompiled|^#   precompile" "$out/kernel_variants.txt" | head -20
if grep -q "^TFLOP/s" "$out/kernel_variants.txt"; then
  sed -n '/^TFLOP\/s/,$p' "$out/kernel_variants.txt"
else  # cut short: the table of the shapes that finished
  tail -3 "$out/kernel_variants.txt"
  python3 -m ringsp_bench.kernel_variants --summarize "$out/kernel_variants.json" 2>&1 | tail -40 || true
fi
