#!/usr/bin/env bash
# One GPU: host cost (overhead.py, host_time.py), the compile/CUDA-graph script, then the
# Qwen-Image 1024² forward eager vs diffusers at world size 1. Logs and JSON under OUTDIR.
# Needs diffusers wheels in .whl/. Usage: bash bench/device/session2.sh OUTDIR
set -uo pipefail
out=${1:-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 RINGSP_CACHE_DIR=/tmp/ringsp-cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -2
timeout 60 python3 -m ringsp_bench.overhead --json "$out/overhead.json" 2>&1 | tail -20
timeout 75 python3 -m ringsp_bench.host_time --device cuda --iters 5 --warmup 2 --json "$out/host_time_cuda.json" 2>&1 \
  | grep -v "kept in float32" | tail -6
SKIP_GENERATE=1 bash bench/device/compile.sh "$out" /tmp/compile-logs 2>&1 | tail -40
timeout 100 python3 -m ringsp_bench.qwen_forward --resolutions 1024 --iters 5 --warmup 2 --skip-diffusers-cp \
  --json "$out/qwen_forward_w1.json" 2>&1 | grep -v "kept in float32" | tail -8
