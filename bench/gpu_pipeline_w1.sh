#!/usr/bin/env bash
# One single-GPU run: kernel bench, then the Wan transformer forward and the VAE decode at
# world size 1 (what runs on a one-GPU machine; the N > 1 runs need torchrun on more GPUs).
# Installs diffusers from the wheels in .whl/ (for machines without a package index).
# Usage: bash bench/gpu_pipeline_w1.sh OUTDIR
set -uo pipefail
out=${1:-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -3
python3 -m ringsp_bench.attn_kernels --json "$out/kernels.json" 2>&1 | tee "$out/kernels.txt"
torchrun --nproc_per_node 1 -m ringsp_bench.wan_forward --resolutions 480p,720p --iters 3 --warmup 1 \
  --json "$out/wan_forward_w1.json" 2>&1 | tail -25 | tee "$out/wan_forward.txt"
torchrun --nproc_per_node 1 -m ringsp_bench.vae_decode --iters 2 --warmup 1 --check \
  --json "$out/vae_decode_w1.json" 2>&1 | tail -25 | tee "$out/vae_decode.txt"
