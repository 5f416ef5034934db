#!/usr/bin/env bash
# One GPU: the optional FlashAttention-4 path. flash-attn-4 4.0.0b36 and its CuTe DSL (92 MB
# compiler library) travel as files under .fa4/ (git-ignored): .fa4/a/libs_cu13.tar.xz.part0
# and .fa4/b/{libs_cu13.tar.xz.part1, *.whl}. A call cannot carry both parts (64 MiB), so
# `stash` copies part 0 to /tmp in one call and the next call, on the same warm machine,
# carries .fa4/b (list its wheels: flash-attn-4, nvidia-cutlass-dsl, -libs-base, -libs-core,
# apache-tvm-ffi, torch-c-dlpack-ext, quack-kernels). Stages (default: all but stash):
#   stash    copy .fa4/a/* to /tmp
#   install  unpack everything into /tmp/fa4site (once per machine) and import FA4
#   tests    tests/kernels/test_ops_gpu.py (FA4 forced, next to the other paths)
#   tune     python -m ringsp_kernels.tune --force: re-measure every shipped class with FA4 as
#            a candidate -> OUTDIR/dispatch_table.json (to ship)
#   kernels  ringsp_bench.attn_kernels with FA4 rows
#   ring     ringsp_bench.ring_rank with FA4 columns
# .fa4/ is made here by bench/device/fa4_fetch.sh.
# Usage (repo root): bash bench/device/fa4.sh OUTDIR [stage ...]
set -uo pipefail
out=${1:?usage: bash bench/device/fa4.sh OUTDIR [stash|install|tests|tune|kernels|ring ...]}
shift
stages=${*:-install tests tune kernels ring}
mkdir -p "$out"
log="$out/fa4_log.txt"
site=/tmp/fa4site
export PYTHONUNBUFFERED=1 RINGSP_CACHE_DIR=/tmp/ringsp-cache RINGSP_ERR_LOG=/tmp/ringsp-test-errors.jsonl
export PYTHONPATH=$site:$site/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH}
step() { echo -e "\n### $1  ($(date +%T))" | tee -a "$log"; }
has() { [[ " $stages " == *" $1 "* ]]; }

if has stash; then
  step "stash part 0"
  cp .fa4/a/* /tmp/ && ls -la /tmp/libs_cu13.tar.xz.part0 | tee -a "$log"
fi
if has install; then
  step "install"
  if [ ! -d "$site/flash_attn" ]; then
    mkdir -p "$site"
    for w in .fa4/b/*.whl; do python3 -m zipfile -e "$w" "$site"; done
    cat /tmp/libs_cu13.tar.xz.part0 .fa4/b/libs_cu13.tar.xz.part1 > /tmp/libs_cu13.tar.xz \
      && python3 -c "import tarfile, sys; tarfile.open('/tmp/libs_cu13.tar.xz').extractall(sys.argv[1])" "$site"
  fi
  timeout 150 python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -2 | tee -a "$log"
  timeout 200 python3 - <<'EOF' 2>&1 | tail -20 | tee -a "$log"
import time, torch
t0 = time.perf_counter()
from ringsp_kernels import fa4
print("fa4 available:", fa4.available(), fa4.why_unavailable(), "version", fa4.version(),
      f"import {time.perf_counter() - t0:.1f} s")
if fa4.available():
    q, k, v = (torch.randn(1, 1000, 4, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    t0 = time.perf_counter()
    out, lse = fa4.attention(q, k, v, 128 ** -0.5, 1000)
    torch.cuda.synchronize()
    ref, ref_lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True)[:2]
    print(f"first call (compile) {time.perf_counter() - t0:.1f} s; out {tuple(out.shape)} lse {tuple(lse.shape)};",
          "max |out - cudnn|", (out - ref.transpose(1, 2)).abs().max().item(),
          "max |lse - cudnn|", (lse - ref_lse.view_as(lse)).abs().max().item())
EOF
fi
if has tests; then
  step "GPU tests (test_ops_gpu.py, test_fa4.py)"
  rm -f "$RINGSP_ERR_LOG"
  timeout 160 python3 -m pytest tests/kernels/test_ops_gpu.py tests/kernels/test_fa4.py -q -p no:cacheprovider -rfE \
    2>&1 | tail -25 | tee -a "$log" || true
  python3 -m ringsp_bench.worst_errors "$RINGSP_ERR_LOG" 2>&1 | tee -a "$log" || true
fi
if has tune; then
  step "tune (every shipped class, FA4 a candidate)"
  timeout 200 python3 -m ringsp_kernels.tune --force --out "$out/dispatch_table.json" 2>&1 | tee -a "$log" || true
fi
if has kernels; then
  step "kernels"
  timeout 170 python3 -m ringsp_bench.attn_kernels --reps 40 --rounds 2 --json "$out/kernels_fa4.json" 2>&1 \
    | grep -E "^#|^##|attn_fwd|chain4|fa4|cudnn |auto /" | tee -a "$log" || true
fi
if has ring; then
  step "ring_rank"
  timeout 220 python3 -m ringsp_bench.ring_rank --reps 40 --json "$out/ring_rank_fa4.json" 2>&1 | tee -a "$log" || true
fi
