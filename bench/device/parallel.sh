#!/usr/bin/env bash
# One GPU: the parallel layer's CUDA paths and host cost.
#  - tests/parallel/test_usp_gpu.py: the ring's real CUDA stream/event loop as a virtual ring of
#    R ranks over NCCL self send/receive (delays injected on either stream), the Ulysses receive
#    layout read in place, and the multi-GPU cases (skipped below their GPU count);
#  - ringsp_bench.host_time --device cuda: host ms per Qwen-Image layer (diffusers alone vs ringsp u1r1).
# Needs diffusers wheels in .whl/. Usage: bash bench/device/parallel.sh OUTDIR
set -uo pipefail
out=${1:-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -2
timeout 240 python3 -m pytest tests/parallel/test_usp_gpu.py -q -p no:cacheprovider -rfE 2>&1 | tail -25 | tee "$out/parallel.txt"
timeout 150 python3 -m ringsp_bench.host_time --device cuda --iters 10 --warmup 3 --json "$out/host_time_cuda.json" 2>&1 \
  | grep -v "kept in float32" | tail -8 | tee -a "$out/parallel.txt"
