#!/usr/bin/env bash
# One GPU (world size 1): FLUX.1-dev 1024x1024 and LTX-Video 768x512x97 transformer forwards,
# ringsp vs diffusers with its default attention backend (ringsp_bench.dit_forward; target
# speedup >= 1.0x), then the published-config demos through `ringsp generate --dummy-weights`.
#   flux_forward_w1.json, ltx_forward_w1.json, generate_flux.json, generate_ltx.json -> OUTDIR
# Usage (one line on the device): bash bench/device/dit_forward.sh "$OUT"   (~6 min on an H100)
set -uo pipefail
out=${1:-out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -2
start=$(date +%s)
step() { echo "[dit_forward.sh] $1 ($(( $(date +%s) - start )) s)"; }

step "FLUX.1-dev forward, 1024 x 1024"
timeout 150 python3 -m ringsp_bench.dit_forward --model flux.1-dev --iters 5 --warmup 2 \
  --json "$out/flux_forward_w1.json" 2>&1 | tee "$out/flux_forward.txt" | tail -5
step "LTX-Video forward, 768 x 512 x 97"
timeout 90 python3 -m ringsp_bench.dit_forward --model ltx-video --text-valid 100 --iters 5 --warmup 2 \
  --json "$out/ltx_forward_w1.json" 2>&1 | tee "$out/ltx_forward.txt" | tail -5
step "ringsp generate --model flux.1-dev --dummy-weights (4 steps)"
timeout 120 python3 -m ringsp generate --model flux.1-dev --dummy-weights --device cuda --steps 4 --no-output \
  --json "$out/generate_flux.json" > "$out/generate_flux.txt" 2>&1; tail -25 "$out/generate_flux.txt"
step "ringsp generate --model ltx-video --dummy-weights, 768 x 512 x 97 (4 steps)"
timeout 100 python3 -m ringsp generate --model ltx-video --dummy-weights --device cuda --steps 4 --height 512 \
  --width 768 --num-frames 97 --no-output --json "$out/generate_ltx.json" > "$out/generate_ltx.txt" 2>&1
tail -25 "$out/generate_ltx.txt"
step "done"
