"""Host cost of the ops: microseconds of CPU time per call, on a shape so small that the GPU
never sets the pace (B=1, S=128, H=2, D=64, bf16 by default).

    python -m ringsp_bench.overhead [--json OUT.json] [--calls 2000] [--seq 128] [--heads 2] [--head-dim 64]

Each row issues `--calls` calls in a loop without synchronising and reports the loop's wall
time per call (host_us); gpu_us is the GPU time per call over the same loop (CUDA events).
When gpu_us is close to host_us, the GPU was the bottleneck and host_us is an upper bound.
Rows: the public ops per path (auto / forced Triton / forced cuDNN), the same through
torch.ops.ringsp (the op dispatcher), the CUDA implementation without checks, the checks
alone, the bare cuDNN call, the cached Triton launch, the plain Triton JIT launch, the
merge launch, and a torch add_ as the floor of any launch from Python.
"""
import argparse
import json
import sys
import time

import torch

from .attn_kernels import versions  # the shared run metadata


def host_us(fn, calls):
    """(host us per call, GPU us per call) of `calls` unsynchronised calls."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - t0
    end.record()
    end.synchronize()
    return host * 1e6 / calls, start.elapsed_time(end) * 1e3 / calls


def rows(q, k, v, acc, lse, out_blk, lse_blk):
    import triton

    import ringsp_kernels as rk
    from ringsp_kernels import checks
    from ringsp_kernels.cuda import ops as cuda
    from ringsp_kernels.cuda import triton_attn
    from ringsp_kernels.cuda.triton_merge import launch_merge

    B, S, H, D = q.shape
    scale = D ** -0.5
    ops = torch.ops.ringsp
    cudnn = torch.ops.aten._scaled_dot_product_cudnn_attention
    config = cuda._plan(q, k, v, scale, S, "step")[1]
    consts, options = triton_attn._constexprs(q, D, True, triton_attn._can_use_desc(k, v), config)
    grid = (triton.cdiv(S, config[0]), B * H, 1)
    args = (q, k, v, acc, lse, scale * triton_attn.LOG2E, S, S, S, B * S, H, *q.stride()[:3], *k.stride()[:3],
            *v.stride()[:3], *acc.stride()[:3], *lse.stride())

    def jit_launch():
        if consts["USE_DESC"]:
            triton.set_allocator(triton_attn._scratch)
        triton_attn.ring_attn_kernel[grid](*args, **consts, **options)

    def checks_only():
        checks.check_qkv(q, k, v, None, None)
        checks.check_state(q, acc, lse)

    out = {}
    for path in ("auto", "triton", "cudnn"):  # main() forces the path named in brackets
        out[f"rk.attn_step_[{path}]"] = lambda: rk.attn_step_(q, k, v, acc, lse)
        out[f"rk.attn_fwd[{path}]"] = lambda: rk.attn_fwd(q, k, v)
    out.update({
        "torch.ops.ringsp.attn_step_": lambda: ops.attn_step_(q, k, v, acc, lse, None, None),
        "torch.ops.ringsp.attn_fwd": lambda: ops.attn_fwd(q, k, v, None, None),
        "cuda.attn_step_ (no checks)": lambda: cuda.attn_step_(q, k, v, acc, lse),
        "checks (qkv + state)": checks_only,
        "cudnn bare (aten op)": lambda: cudnn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True),
        "cuda.cudnn_attn": lambda: cuda.cudnn_attn(q, k, v, scale, S),
        "triton launch (cached)": lambda: triton_attn.launch(q, k, v, acc, lse, scale, S, True, config),
        "triton launch (JIT fn[grid])": jit_launch,
        "merge launch": lambda: launch_merge(acc, lse, out_blk, lse_blk),
        "rk.init_state": lambda: rk.init_state(q),
        "torch add_ (launch floor)": lambda: out_blk.add_(0),
    })
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("ringsp_bench.overhead needs a CUDA GPU")
    import triton

    import ringsp_kernels as rk
    from ringsp_kernels import dispatch
    from ringsp_kernels.cuda import fast_launch
    from ringsp_kernels.cuda import ops as cuda

    S, H, D = args.seq, args.heads, args.head_dim
    q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    acc, lse = rk.init_state(q)
    out_blk, lse_blk = rk.attn_fwd(q, k, v)
    rk.attn_step_(q, k, v, acc, lse)  # resolves the dispatch (may measure) before timing
    report = {"meta": versions(), "shape": {"B": 1, "S": S, "H": H, "D": D, "dtype": "bfloat16"},
              "calls": args.calls, "fast_launch": fast_launch.ENABLED, "rows": {}}
    print(f"# {report['meta']['device']}  torch {torch.__version__}  triton {triton.__version__}  "
          f"fast launch {'on' if fast_launch.ENABLED else 'off'}  B=1 S={S} H={H} D={D} bf16", flush=True)
    print(f"  {'call':34s} {'host us':>9s} {'gpu us':>9s}")
    fns = rows(q, k, v, acc, lse, out_blk, lse_blk)
    for name, fn in fns.items():
        path = name[name.index("[") + 1:-1] if name.startswith("rk.") and "[" in name else "auto"
        with cuda.forced(path):
            h, g = host_us(fn, args.calls)
        report["rows"][name] = {"host_us": h, "gpu_us": g}
        print(f"  {name:34s} {h:9.2f} {g:9.2f}", flush=True)
    report["dispatch"] = {key: e for key, e in dispatch.snapshot(cuda.versions())["entries"].items()
                          if f"|D{D}|H{H}|" in key and key.startswith(cuda.device_name(0))}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
