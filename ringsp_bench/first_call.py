"""What the first call of a new shape costs, per component, in a fresh process.

    python -m ringsp_bench.first_call [--json OUT.json] [--seq 14040] [--heads 12] [--head-dim 128]

Run it twice: the first process also pays compilation (Triton's disk cache is then warm);
the second shows what every later run of a command still pays on its first step. For each
component: the first call's wall time (synchronised) and the median of the next 5.
Components: importing FlashAttention-4 (where installed), CUDA context + allocator (a tiny
add), a bf16 matmul (cuBLAS), cuDNN attention, ringsp's Triton attention (forced), ringsp's
automatic attn_fwd (dispatch + its path), and a short-key (text) attention through attn_fwd.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch


def timed_first(fn, again=5):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    later = []
    for _ in range(again):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        later.append(time.perf_counter() - t0)
    return {"first_ms": first * 1e3, "later_ms": statistics.median(later) * 1e3}


def _cache_dir():
    return os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")


def _cache_entries():
    try:
        return len(os.listdir(_cache_dir()))
    except OSError:
        return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json")
    p.add_argument("--seq", type=int, default=14040, help="Wan2.1 480x832, 33 frames: 14040 tokens")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=128)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("ringsp_bench.first_call needs a CUDA GPU")
    cache_before = _cache_entries()
    t0 = time.perf_counter()
    import ringsp_kernels as rk
    from ringsp_kernels.cuda import fa4
    from ringsp_kernels.cuda import ops as cuda

    import_ms = (time.perf_counter() - t0) * 1e3
    S, H, D, dt = args.seq, args.heads, args.head_dim, torch.bfloat16
    # importing FA4's CuTe DSL (where installed) happens on the first dispatch decision: time it
    # on its own so that it is not charged to whichever row comes first
    rows = {"FA4 import (where installed)": timed_first(fa4.available, again=1),
            "context + tiny add": timed_first(lambda: torch.ones(1, device="cuda").add_(1))}
    x = torch.randn(S, H * D, device="cuda", dtype=dt)
    w = torch.randn(H * D, H * D, device="cuda", dtype=dt)
    rows["matmul (cuBLAS)"] = timed_first(lambda: x @ w)
    q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=dt) for _ in range(3))
    kt = torch.randn(1, 512, H, D, device="cuda", dtype=dt)
    rows["cudnn attention"] = timed_first(lambda: cuda.cudnn_attn(q, k, v, D ** -0.5, S))

    def forced_triton():
        with cuda.forced("triton"):
            rk.attn_fwd(q, k, v)
    rows["ringsp attn_fwd [triton]"] = timed_first(forced_triton)
    q2 = q[:, : S - 8]  # another exact shape of the same class: a new plan, no new measurement
    rows["ringsp attn_fwd [auto]"] = timed_first(lambda: rk.attn_fwd(q2, k, v))
    rows["ringsp attn_fwd [auto] text keys"] = timed_first(lambda: rk.attn_fwd(q, kt, kt))
    cache_after = _cache_entries()
    report = {"import_ms": import_ms, "rows": rows, "S": S, "H": H, "D": D, "triton_cache": _cache_dir(),
              "triton_cache_entries": {"before": cache_before, "after": cache_after}}
    print(f"import ringsp_kernels {import_ms:.0f} ms; Triton cache entries {cache_before} -> {cache_after}"
          " (a growth in a second process: kernels compiled again)")
    for name, r in rows.items():
        print(f"  {name:36s} first {r['first_ms']:9.1f} ms   later {r['later_ms']:8.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
