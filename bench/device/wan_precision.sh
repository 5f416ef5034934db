#!/usr/bin/env bash
# One GPU (world size 1): the Wan2.1-T2V-1.3B 480p/81f transformer forward with ringsp's SP
# attention at each precision (native bf16, int8, fp8) next to diffusers' own bf16 forward:
# time, and each output's max / mean deviation from diffusers' (same weights, seed, inputs)
# -> OUTDIR/wan_precision_w1.json. Needs diffusers' wheels and their dependencies in .whl/ (as
# compile.sh). Usage: bash bench/device/wan_precision.sh OUTDIR   (~3 min on an H100)
set -uo pipefail
out=${1:?usage: bash bench/device/wan_precision.sh OUTDIR}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  2>&1 | tail -2 && export PYTHONPATH=/tmp/site
timeout 400 torchrun --nproc_per_node 1 -m ringsp_bench.wan_forward --resolutions 480p \
  --attention-precision native,int8,fp8 --json "$out/wan_precision_w1.json" 2>&1 | tee "$out/wan_precision.txt" \
  | grep -v "^ringsp: " | tail -12
