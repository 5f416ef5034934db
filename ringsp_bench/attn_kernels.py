"""Kernel benchmark: ringsp's fused ring-step kernels vs cuDNN and flash SDPA, side by side.

    python -m ringsp_bench.attn_kernels [--json OUT.json] [--sweep] [--quick] [--rounds 3] [--reps 100]

For every shape (bf16, B=1) it checks the kernels against cuDNN's output and LSE, then
times and prints TFLOP/s = 4*B*H*Sq*Sk*D / time. Each time is the median over `--rounds`
rounds of do_bench medians, the candidates interleaved within a round, so that clock
drift and throttling bias none of them:
  attn_fwd            ringsp's Triton kernel over the whole KV (the class's tuned config)
  step_chain4         init_state + 4 Triton attn_step_ over KV blocks of S/4 + finalize
  ...[cudnn]          the same through rk with the cuDNN path forced (cuDNN + one-pass merge)
  ...[auto]           the same through the default dispatch (its tables, or a measurement
                      of the class made before the timing starts)
  cudnn               torch.ops.aten._scaled_dot_product_cudnn_attention (returns LSE)
  flash               SDPA with the flash backend
  cudnn4+eager_merge  cuDNN on 4 blocks of S/4 merged with float32 torch ops (the unfused ring)
  cudnn4+fused_merge  cuDNN on 4 blocks merged by ringsp's one-pass Triton merge
  ...[fa4], fa4       where flash-attn-4 is installed: rk with the FA4 path forced (FA4 +
                      one-pass merge for steps), and FA4's own forward alone
auto_vs_best = [auto] / the fastest of ringsp's paths per op (fwd: attn_fwd, cudnn,
attn_fwd[fa4]; chain: step_chain4, step_chain4[cudnn], step_chain4[fa4]); the dispatch's
target is <= 1.02.
--sweep also times fixed Triton configurations (block sizes, warps, stages, TMA, warp
specialisation) on each shape, to pick the tuner's candidate list.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys

import torch

from ringsp_kernels.cuda.tune import KERNEL_SHAPES as SHAPES  # (name, Sq=Sk, H, D); `tune --set kernels` measures them
SWEEP = [  # BLOCK_M, BLOCK_N, warps, stages, tma, warp_spec
    (128, 128, 8, 3, True, True), (128, 128, 8, 3, True, False), (128, 128, 4, 3, True, True),
    (128, 64, 4, 3, True, True), (128, 64, 8, 3, True, True), (128, 128, 8, 2, True, True),
    (128, 64, 8, 3, False, False), (64, 128, 4, 3, True, False),
]


def flops(B, H, Sq, Sk, D):
    return 4.0 * B * H * Sq * Sk * D


def eager_merge(acc, lse, out, lse_blk):
    """The unfused merge a ring implementation without ringsp does in torch ops."""
    new = torch.logaddexp(lse, lse_blk)
    w_old = torch.exp(lse - new).transpose(1, 2).unsqueeze(-1)
    w_new = torch.exp(lse_blk - new).transpose(1, 2).unsqueeze(-1)
    acc.mul_(w_old).add_(out.float() * w_new)
    lse.copy_(new)


def candidates(q, k, v, rk, cuda_ops):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ringsp_kernels.cuda import fa4

    S = k.shape[1]
    blocks = [(i * S // 4, (i + 1) * S // 4) for i in range(4)]
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

    def chain():
        acc, lse = rk.init_state(q)
        for a, b in blocks:
            rk.attn_step_(q, k[:, a:b], v[:, a:b], acc, lse)
        return rk.finalize(acc, lse, q.dtype)

    def cudnn():
        return torch.ops.aten._scaled_dot_product_cudnn_attention(qt, kt, vt, None, True)

    def flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)

    def cudnn_ring(merge):
        def run():
            acc, lse = rk.init_state(q)
            for a, b in blocks:
                merge(acc, lse, *cuda_ops.cudnn_attn(q, k[:, a:b], v[:, a:b], q.shape[-1] ** -0.5, b - a))
            return acc
        return run

    def forced(path, fn):
        def run():
            with cuda_ops.forced(path):
                return fn()
        return run

    from ringsp_kernels.cuda import hopper

    fa4_rows = {}
    if hopper.usable(q):  # ringsp's own Hopper kernel, merge inside
        fa4_rows = {"attn_fwd[hopper]": forced("hopper", lambda: rk.attn_fwd(q, k, v)),
                    "step_chain4[hopper]": forced("hopper", chain)}
    if fa4.available():
        fa4_rows |= {"attn_fwd[fa4]": forced("fa4", lambda: rk.attn_fwd(q, k, v)),
                    "step_chain4[fa4]": forced("fa4", chain),
                    "fa4": lambda: fa4.attention(q, k, v, q.shape[-1] ** -0.5, S)}
    return {
        **fa4_rows,
        "attn_fwd": forced("triton", lambda: rk.attn_fwd(q, k, v)),
        "step_chain4": forced("triton", chain),
        "attn_fwd[cudnn]": forced("cudnn", lambda: rk.attn_fwd(q, k, v)),
        "step_chain4[cudnn]": forced("cudnn", chain),
        "attn_fwd[auto]": lambda: rk.attn_fwd(q, k, v),
        "step_chain4[auto]": chain,
        "cudnn": cudnn,
        "flash": flash,
        "cudnn4+eager_merge": cudnn_ring(eager_merge),
        "cudnn4+fused_merge": cudnn_ring(rk.merge_),
    }


def check(q, k, v, rk, cuda_ops, path="triton"):
    """A path's output/LSE against cuDNN's: relative error of out, max |lse diff|."""
    with cuda_ops.forced(path):
        out, lse = rk.attn_fwd(q, k, v)
        ref_out, ref_lse = cuda_ops.cudnn_attn(q, k, v, q.shape[-1] ** -0.5, k.shape[1])
        acc, st = rk.init_state(q)
        S = k.shape[1]
        for i in range(4):
            a, b = i * S // 4, (i + 1) * S // 4
            rk.attn_step_(q, k[:, a:b], v[:, a:b], acc, st)
    rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()  # noqa: E731
    return {"fwd_rel_err": rel(out, ref_out), "fwd_lse_max_diff": (lse - ref_lse).abs().max().item(),
            "chain_rel_err": rel(acc, ref_out), "chain_lse_max_diff": (st - ref_lse).abs().max().item()}


def sweep(q, k, v, bench):
    """TFLOP/s-ready times (ms) of fixed Triton configurations: attn_fwd over all keys, and
    a 4-step chain (init_state + 4 in-place steps on S/4 blocks + finalize)."""
    import ringsp_kernels as rk
    from ringsp_kernels.cuda.triton_attn import launch

    B, S, H, D = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(B, H, S, device=q.device)
    rows = {}
    for bm, bn, w, st, tma, ws in SWEEP:
        name = f"M{bm}-N{bn}-w{w}-s{st}{'-tma' if tma else ''}{'-ws' if ws else ''}"
        cfg = dict(block=(bm, bn, w, st), use_desc=tma, warp_spec=ws)

        def chain():
            acc, st_lse = rk.init_state(q)
            for i in range(4):
                a, b = i * S // 4, (i + 1) * S // 4
                launch(q, k[:, a:b], v[:, a:b], acc, st_lse, D ** -0.5, b - a, True, **cfg)
            return rk.finalize(acc, st_lse, q.dtype)

        try:
            rows[name] = bench(lambda: launch(q, k, v, out, lse, D ** -0.5, S, False, **cfg))
            rows[name + " chain4"] = bench(chain)
        except Exception as e:  # a config the compiler or the chip refuses
            rows[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return rows


def versions():
    import triton

    return {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
            "device": torch.cuda.get_device_name(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}


def timed(fns, bench, rounds):
    """name -> ms: the median over `rounds` of each candidate's do_bench median, the
    candidates interleaved within each round."""
    runs = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            runs[name].append(bench(fn))
    return {name: statistics.median(ms) for name, ms in runs.items()}


def dispatch_entries(q, S, D, H, rk, cuda_ops):
    """The dispatch entries the [auto] rows use (resolving them first: a class no table
    knows is measured here, before any timing)."""
    from ringsp_kernels import dispatch

    rk.attn_fwd(q, q, q)
    acc, lse = rk.init_state(q)
    rk.attn_step_(q, q[:, :S // 4], q[:, :S // 4], acc, lse)
    name = cuda_ops.device_name(q.get_device())
    return {op: dispatch.lookup(dispatch.class_key(name, q.dtype, D, H, 1, S, sk, op), cuda_ops.versions())
            for op, sk in (("fwd", S), ("step", S // 4))}


def summarise(entry):
    ms = entry["ms"]
    entry["ratio_to_cudnn"] = {c: ms["cudnn"] / t for c, t in ms.items()}
    entry["chain_over_fwd"] = ms["step_chain4"] / ms["attn_fwd"]
    entry["chain_over_fwd_auto"] = ms["step_chain4[auto]"] / ms["attn_fwd[auto]"]
    if "attn_fwd[hopper]" in ms:
        entry["chain_over_fwd_hopper"] = ms["step_chain4[hopper]"] / ms["attn_fwd[hopper]"]
    best_fwd = min(ms[c] for c in ("attn_fwd", "cudnn", "attn_fwd[fa4]", "attn_fwd[hopper]") if c in ms)
    best_chain = min(ms[c] for c in ("step_chain4", "step_chain4[cudnn]", "step_chain4[fa4]",
                                     "step_chain4[hopper]") if c in ms)
    entry["auto_vs_best"] = {"fwd": ms["attn_fwd[auto]"] / best_fwd, "chain": ms["step_chain4[auto]"] / best_chain}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--sweep", action="store_true", help="also time fixed Triton configurations")
    p.add_argument("--quick", action="store_true", help="first two shapes only")
    p.add_argument("--reps", type=int, default=100, help="do_bench window per candidate and round, ms")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per candidate")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("ringsp_bench.attn_kernels needs a CUDA GPU (on CPU see ringsp_bench.kernels_cpu)")
    import logging

    import triton

    import ringsp_kernels as rk
    from ringsp_kernels.cuda import hopper
    from ringsp_kernels.cuda import ops as cuda_ops

    logging.basicConfig(format="%(message)s")
    logging.getLogger("ringsp").setLevel(logging.INFO)  # shows any measured triton/cuDNN choice

    bench = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=args.reps, return_mode="median")  # noqa: E731
    report = {"meta": versions(), "shapes": {}}
    print(f"# {report['meta']['device']}  torch {torch.__version__}  triton {triton.__version__}", flush=True)
    for name, S, H, D in SHAPES[:2] if args.quick else SHAPES:
        g = torch.Generator(device="cuda").manual_seed(S)
        q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        fl = flops(1, H, S, S, D)
        entry = {"S": S, "H": H, "D": D, "dispatch": dispatch_entries(q, S, D, H, rk, cuda_ops),
                 "check": check(q, k, v, rk, cuda_ops)}
        if hopper.usable(q):
            entry["check_hopper"] = check(q, k, v, rk, cuda_ops, "hopper")
        entry["ms"] = timed(candidates(q, k, v, rk, cuda_ops), bench, args.rounds)
        entry["tflops"] = {c: fl / ms / 1e9 for c, ms in entry["ms"].items()}
        if args.sweep:
            entry["sweep_tflops"] = {c: (fl / ms / 1e9 if isinstance(ms, float) else ms)
                                     for c, ms in sweep(q, k, v, bench).items()}
        summarise(entry)
        report["shapes"][name] = entry
        print(f"\n## {name}: S={S} H={H} D={D}  check {entry['check']} hopper {entry.get('check_hopper')}",
              flush=True)
        print(f"  dispatch: fwd {entry['dispatch']['fwd']}, step {entry['dispatch']['step']}")
        for cand in entry["ms"]:
            print(f"  {cand:20s} {entry['ms'][cand]:9.3f} ms {entry['tflops'][cand]:7.1f} TFLOP/s "
                  f"x{entry['ratio_to_cudnn'][cand]:.3f} of cuDNN", flush=True)
        print(f"  chain4/fwd = {entry['chain_over_fwd']:.3f} (triton), {entry['chain_over_fwd_auto']:.3f} (auto); "
              f"auto / best path: fwd {entry['auto_vs_best']['fwd']:.3f}, "
              f"chain {entry['auto_vs_best']['chain']:.3f}")
        for c, t in entry.get("sweep_tflops", {}).items():
            print(f"  sweep {c:28s} {t if isinstance(t, str) else f'{t:7.1f} TFLOP/s'}", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
