#!/usr/bin/env bash
# One GPU (world size 1): torch.compile and piecewise CUDA graphs under SP.
#  1. ringsp_bench.wan_forward, Wan2.1-T2V-1.3B 480p/81f: ringsp and diffusers, eager and compiled
#     the same way (regional: compile_repeated_blocks(fullgraph=True)) -> wan_compile_w1.json
#  2. ringsp_bench.qwen_forward, Qwen-Image 1024x1024 (200 of 256 text tokens valid): ringsp eager,
#     compiled, compiled + CUDA graphs -> qwen_compile_w1.json
#  3. tests/models/test_compile_gpu.py: Inductor and CUDA graphs equal eager on tiny models
#  4. ringsp generate --compile --cuda-graphs --compare-single on tiny-wan (CUDA)
# Compile times are in the JSON (compile_s) and the summary. Targets: ringsp compiled >= 1.17x
# ringsp eager and >= diffusers compiled (Wan); Qwen compiled + graphs >= 1.25x eager.
# Needs diffusers wheels in .whl/. Usage: bash bench/device/compile.sh OUTDIR [LOGDIR]   (~5 min)
set -uo pipefail
out=${1:-out}; logs=${2:-$out}; mkdir -p "$out" "$logs"  # JSON to OUTDIR, logs to LOGDIR
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -2
start=$(date +%s)
step() { echo "[compile.sh] $1 ($(( $(date +%s) - start )) s)"; }

step "wan forward"
timeout 150 python3 -m ringsp_bench.wan_forward --resolutions 480p --iters 3 --warmup 1 --compile --skip-diffusers-cp \
  --json "$out/wan_compile_w1.json" > "$logs/wan_compile.txt" 2>&1 || true
tail -8 "$logs/wan_compile.txt"

step "qwen forward"
timeout 170 python3 -m ringsp_bench.qwen_forward --resolutions 1024 --iters 3 --warmup 1 --compile --cuda-graphs \
  --skip-single --skip-diffusers-cp --json "$out/qwen_compile_w1.json" > "$logs/qwen_compile.txt" 2>&1 || true
tail -6 "$logs/qwen_compile.txt"

step "gpu tests"
timeout 90 python3 -m pytest tests/models/test_compile_gpu.py -q -p no:cacheprovider -rfE -x \
  > "$logs/tests_gpu.txt" 2>&1 || true
tail -15 "$logs/tests_gpu.txt"

step "ringsp generate --compile --cuda-graphs"
[ -n "${SKIP_GENERATE:-}" ] || timeout 60 python3 -m ringsp generate --model tiny-wan --device cuda --steps 3 --compile --cuda-graphs \
  --compare-single --no-output --json "$out/generate_tiny_compile.json" > "$logs/generate.txt" 2>&1 || true
grep -E "compile warm-up|SP check|Denoising|error" "$logs/generate.txt" | head -6

step "summary"
python3 - "$out" <<'EOF' 2>&1 | tee "$logs/summary.txt"
import json, os, sys
out = sys.argv[1]

def rows(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        print(f"{name}: missing (the step failed or timed out; see the .txt log)")
        return []
    return json.load(open(path)).get("results", [])

def label(r):
    return "eager" if r.get("compile") is None else r["compile"] + ("+graphs" if r.get("cuda_graphs") else "")

def median(rs, impl, variant):
    for r in rs:
        if r["impl"] == impl and label(r) == variant and "median_ms" in r:
            return r["median_ms"], r.get("compile_s")
    return None, None

print(f"{'model':<10} {'impl':<15} {'variant':<16} {'median ms':>10} {'compile s':>10} {'rel err':>9}")
for name, rs in (("wan480p", rows("wan_compile_w1.json")), ("qwen1024", rows("qwen_compile_w1.json"))):
    for r in rs:
        if "error" in r:
            print(f"{name:<10} {r['impl']:<15} {label(r):<16} ERROR {r['error'][:70]}")
            continue
        cs = "-" if r.get("compile_s") is None else f"{r['compile_s']:.1f}"
        err = "-" if r.get("max_rel_err") is None else f"{r['max_rel_err']:.1e}"
        print(f"{name:<10} {r['impl']:<15} {label(r):<16} {r['median_ms']:>10.1f} {cs:>10} {err:>9}")

def check(text, value, target):
    if value is None:
        print(f"{text}: n/a")
    else:
        print(f"{text}: {value:.3f}x (target >= {target}x) {'OK' if value >= target else 'MISSED'}")

w = rows("wan_compile_w1.json")
re_, _ = median(w, "ringsp", "eager"); rc, _ = median(w, "ringsp", "regional"); dc, _ = median(w, "diffusers-1gpu", "regional")
check("Wan ringsp compiled vs ringsp eager", re_ / rc if re_ and rc else None, 1.17)
check("Wan ringsp compiled vs diffusers compiled", dc / rc if dc and rc else None, 1.0)
q = rows("qwen_compile_w1.json")
qe, _ = median(q, "ringsp", "eager"); qc, _ = median(q, "ringsp", "regional"); qg, _ = median(q, "ringsp", "regional+graphs")
check("Qwen ringsp compiled vs eager", qe / qc if qe and qc else None, 1.0)
check("Qwen ringsp compiled + CUDA graphs vs eager", qe / qg if qe and qg else None, 1.25)
EOF
step "done"
