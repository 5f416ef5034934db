#!/usr/bin/env bash
# One GPU run: build the extension, run the GPU tests, then the kernel benchmark.
# Usage (on a GPU machine, from the repo root): bash bench/gpu_session.sh OUTDIR [bench args...]
set -uo pipefail
out=${1:-out}; shift || true
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -3
[ -n "${SKIP_TESTS:-}" ] || python3 -m pytest tests/kernels -q -x -p no:cacheprovider 2>&1 | tail -15 | tee "$out/gpu_tests.txt"
python3 -m ringsp_bench.attn_kernels --json "$out/kernels.json" "$@" 2>&1 | tee "$out/kernels.txt"
