"""The hopper path's kernel variants side by side: each checked against float64 attention, then
timed (attn_fwd over S, and a 4-step chain of attn_step_ over S/4 blocks) next to cuDNN in the
same process, bf16, B=1, on the kernel benchmark's shapes.

    python -m ringsp_bench.hopper_variants [--json OUT.json] [--variants default,items,...]

Each variant runs in a process of its own (a kernel that hangs costs one timeout, not the run).
Variants: the library kernel's tile configs (ringsp_kernels.cuda.hopper.Config) and the persistent
candidate of ringsp_bench.hopper_persistent; `best` in the JSON names the fastest correct variant
per head dim by the sum of its fwd and chain times.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

import torch

from .attn_kernels import flops, versions

VARIANTS = {  # name -> ("library", Config fields) or ("persistent", candidate launch options)
    "library": ("library", {}),
    "library+3stages": ("library", dict(stages=3)),
    "persistent+tma_state": ("persistent", dict(persistent=True, state_tma=True)),
    "persistent+pointer_state": ("persistent", dict(persistent=True, state_tma=False)),
    "items+tma_state": ("persistent", dict(persistent=False, state_tma=True)),
}


def launcher(name):
    """launch(q, k, v, acc, lse, scale, kv_len, has_state) of a variant."""
    kind, fields = VARIANTS[name]
    if kind == "library":
        from ringsp_kernels.cuda import hopper

        config = hopper.Config(**fields)
        return lambda *a: hopper.launch(*a, config)
    from . import hopper_persistent

    return lambda *a: hopper_persistent.launch(*a, **fields)
SHAPES = [("wan1.3b-480p", 32760, 12, 128), ("qwen-1328", 7146, 24, 128), ("wan-720p-h5", 75600, 5, 128),
          ("d64", 16380, 24, 64)]
CHECKS = [  # B, Sq, Sk, kv_len, H: uneven, padded (NaN), two batches, shorter than a tile
    (1, 1000, 1024, 777, 2), (2, 300, 500, 500, 3), (1, 70, 40, 13, 1)]


def _reference(q, k, v, kv_len):
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k[:, :kv_len], v[:, :kv_len]))
    s = (qd @ kd.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return (torch.softmax(s, -1) @ vd).transpose(1, 2), torch.logsumexp(s, -1)


def check(launch, D):
    """Worst |out - ref| and |lse - ref| of a forward and of a resumed two-step chain."""
    g = torch.Generator(device="cuda").manual_seed(D)
    worst = [0.0, 0.0]
    for B, Sq, Sk, n, H in CHECKS:
        q, k, v = (torch.randn(B, s, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for s in (Sq, Sk, Sk))
        k[:, n:], v[:, n:] = float("nan"), float("nan")
        ref, ref_lse = _reference(q, k, v, n)
        out = torch.full_like(q, float("nan"))
        lse = torch.full((B, H, Sq), float("nan"), device="cuda")
        launch(q, k, v, out, lse, D ** -0.5, n, False)
        acc = torch.zeros(B, Sq, H, D, device="cuda")
        st = torch.full((B, H, Sq), float("-inf"), device="cuda")
        cut = n // 2 + 1
        launch(q, k[:, cut:], v[:, cut:], acc, st, D ** -0.5, n - cut, True)
        launch(q, k, v, acc, st, D ** -0.5, cut, True)
        for o, l in ((out, lse), (acc, st)):
            worst[0] = max(worst[0], (o.double() - ref).abs().max().item())
            worst[1] = max(worst[1], (l.double() - ref_lse).abs().max().item())
    return worst


def time_shapes(launch, D, reps):
    import triton

    from ringsp_kernels.cuda import cudnn

    bench = lambda fn: triton.testing.do_bench(fn, warmup=10, rep=reps, return_mode="median")  # noqa: E731
    out = {}
    for name, S, H, d in SHAPES:
        if d != D:
            continue
        g = torch.Generator(device="cuda").manual_seed(S)
        q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        blocks = [(i * S // 4, (i + 1) * S // 4) for i in range(4)]

        def chain():
            acc = torch.zeros(1, S, H, D, device="cuda")
            lse = torch.full((1, H, S), float("-inf"), device="cuda")
            for a, b in blocks:
                launch(q, k[:, a:b], v[:, a:b], acc, lse, D ** -0.5, b - a, True)

        out_buf, lse_buf = torch.empty_like(q), torch.empty(1, H, S, device="cuda")
        fns = {"cudnn": lambda: cudnn.cudnn_attn(q, k, v, D ** -0.5, S),
               "fwd": lambda: launch(q, k, v, out_buf, lse_buf, D ** -0.5, S, False),
               "chain4": chain}
        ms = {n: min(bench(f) for _ in range(2)) for n, f in fns.items()}
        out[name] = {"ms": ms, "tflops": {n: flops(1, H, S, S, D) / t / 1e9 for n, t in ms.items()},
                     "x_cudnn": {n: ms["cudnn"] / t for n, t in ms.items()}}
    return out


def worker(name, D, reps):
    launch = launcher(name)
    rec = {"variant": name, "D": D, "options": VARIANTS[name]}
    rec["max_abs_err"], rec["max_lse_err"] = check(launch, D)
    rec["ok"] = rec["max_abs_err"] < 2e-2 and rec["max_lse_err"] < 1e-4  # bf16: ~1e-3 measured
    if rec["ok"]:
        rec["shapes"] = time_shapes(launch, D, reps)
    print("RESULT " + json.dumps(rec), flush=True)


def best_variants(results):
    best = {}
    for r in results:
        if not r.get("ok") or "shapes" not in r:
            continue
        total = sum(s["ms"]["fwd"] + s["ms"]["chain4"] for s in r["shapes"].values())
        if r["D"] not in best or total < best[r["D"]][1]:
            best[r["D"]] = (r["variant"], total)
    return {str(d): v for d, (v, _) in best.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--dims", default="128,64", help="head dims to run")
    p.add_argument("--reps", type=int, default=60, help="do_bench window per candidate, ms")
    p.add_argument("--timeout", type=float, default=120, help="seconds per variant and head dim")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args.reps)
    report = {"meta": versions(), "results": []}
    if args.json and os.path.exists(args.json):  # runs over other variants or dims add up
        with open(args.json) as f:
            report["results"] = json.load(f).get("results", [])
    for name in args.variants.split(","):
        for D in (int(d) for d in args.dims.split(",")):
            cmd = [sys.executable, "-m", "ringsp_bench.hopper_variants", "--worker", name, str(D), "--reps", str(args.reps)]
            t0 = datetime.datetime.now()
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=os.environ)
                lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
                rec = json.loads(lines[-1][7:]) if lines else {"variant": name, "D": D, "error": run.stderr[-2000:]}
            except subprocess.TimeoutExpired:
                rec = {"variant": name, "D": D, "error": f"timed out after {args.timeout:g} s"}
            rec["wall_s"] = (datetime.datetime.now() - t0).total_seconds()
            report["results"].append(rec)
            shapes = {n: f"fwd {s['x_cudnn']['fwd']:.3f}x chain4 {s['x_cudnn']['chain4']:.3f}x "
                         f"({s['tflops']['fwd']:.0f}/{s['tflops']['chain4']:.0f} TFLOP/s)"
                      for n, s in rec.get("shapes", {}).items()}
            print(f"{name:34s} D={D}: ok={rec.get('ok')} err={rec.get('max_abs_err')} {shapes} "
                  f"{rec.get('error', '')[-600:]}", flush=True)
            report["best"] = best_variants(report["results"])
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(report, f, indent=1)
    print("best:", report.get("best"), flush=True)


if __name__ == "__main__":
    main()
