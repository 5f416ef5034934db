#!/usr/bin/env bash
# One GPU, the ops layer of the hot-path issue (11) and the per-rank ring bench (11, 12):
#  1. build;  2. python -m ringsp_kernels.tune: measures the dispatch classes of the benches and
#  writes the table to ship (OUTDIR/dispatch_table.json -> ringsp_kernels/tables/dispatch.json);
#  3. tests/kernels/test_ops_gpu.py (then test_ops.py, test_dispatch.py: other helpers' kernel
#  tests run in their own scripts);  4. ringsp_bench.overhead (host us per call);
#  5. ringsp_bench.attn_kernels (auto vs min(Triton, cuDNN));  6. ringsp_bench.ring_rank (per-rank bound).
# Writes 5 files: log.txt, dispatch_table.json, overhead.json, kernels.json, ring_rank.json.
# Expected ~280 s on an H200 (build ~40, tune ~70, GPU tests ~90, rest ~80; per-step timeouts cap it at ~560 s).
# Usage (repo root, GPU machine): bash bench/device/ops.sh OUTDIR
set -uo pipefail
out=${1:?usage: bash bench/device/ops.sh OUTDIR}
mkdir -p "$out"
log="$out/log.txt"
export PYTHONUNBUFFERED=1
export RINGSP_CACHE_DIR=/tmp/ringsp-cache  # the dispatch disk cache: tune fills it, the rest reads it
export RINGSP_ERR_LOG=/tmp/ringsp-test-errors.jsonl
rm -f "$RINGSP_ERR_LOG"
step() { echo -e "\n### $1  ($(date +%T))" | tee -a "$log"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$log"
step "build"
timeout 150 python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -2 | tee -a "$log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())" 2>&1 | tee -a "$log"

step "tune (dispatch table)"
timeout 100 python3 -m ringsp_kernels.tune --out "$out/dispatch_table.json" 2>&1 | tee -a "$log" || true

step "GPU tests (tests/kernels/test_ops_gpu.py)"
timeout 150 python3 -m pytest tests/kernels/test_ops_gpu.py -q -p no:cacheprovider -rfE 2>&1 | tail -40 | tee -a "$log" || true
step "achieved errors (worst per check kind)"
python3 -m ringsp_bench.worst_errors "$RINGSP_ERR_LOG" 2>&1 | tee -a "$log" || true
step "ops contract + dispatch tests (tests/kernels/test_ops.py, test_dispatch.py)"
timeout 50 python3 -m pytest tests/kernels/test_ops.py tests/kernels/test_dispatch.py -q -p no:cacheprovider -rfE 2>&1 \
  | tail -8 | tee -a "$log" || true

step "overhead"
timeout 40 python3 -m ringsp_bench.overhead --json "$out/overhead.json" 2>&1 | tee -a "$log" || true
step "kernels"
timeout 80 python3 -m ringsp_bench.attn_kernels --reps 50 --rounds 2 --json "$out/kernels.json" 2>&1 | tee -a "$log" || true
step "ring_rank"
timeout 70 python3 -m ringsp_bench.ring_rank --reps 50 --json "$out/ring_rank.json" 2>&1 | tee -a "$log" || true

step "summary"
python3 - "$out" <<'EOF' 2>&1 | tee -a "$log" || true
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        print(f"  {name}: missing"); return None
o = load("overhead.json")
if o:
    r = o["rows"]
    print("host us/call:", ", ".join(f"{n} {r[n]['host_us']:.1f}" for n in
          ("rk.attn_step_[auto]", "rk.attn_fwd[auto]", "rk.attn_step_[triton]", "cudnn bare (aten op)",
           "triton launch (cached)", "triton launch (JIT fn[grid])") if n in r), f"(fast launch {o['fast_launch']})")
k = load("kernels.json")
if k:
    for n, e in k["shapes"].items():
        print(f"kernels {n:14s} auto/best fwd {e['auto_vs_best']['fwd']:.3f} chain {e['auto_vs_best']['chain']:.3f}"
              f"  triton fwd/cudnn {e['ratio_to_cudnn']['attn_fwd']:.3f}  paths fwd {(e['dispatch']['fwd'] or {}).get('path')}"
              f" step {(e['dispatch']['step'] or {}).get('path')}")
g = load("ring_rank.json")
if g:
    for n, e in g["shapes"].items():
        for N, r in e["ring"].items():
            b = r["bound"]
            print(f"ring {n:10s} N={N}: bound auto {b['ringsp[auto]']:.3f} triton {b['ringsp[triton]']:.3f} "
                  f"cudnn+merge {b['ringsp[cudnn+merge]']:.3f} peers {b['peers']:.3f}"
                  f" | ulysses auto {e['ulysses'][N]['bound']['ringsp[auto]']:.3f}")
t = load("dispatch_table.json")
if t:
    print(f"dispatch table: {len(t['entries'])} classes -> copy to ringsp_kernels/tables/dispatch.json")
EOF
