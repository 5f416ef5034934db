"""Candidate kernels for the fused ring step side by side with the current Triton kernel and
cuDNN, in one run (the harness for the next candidate: add it to `candidates`).

    python -m ringsp_bench.kernel_variants [--json OUT.json] [--jobs N] [--quick] [--shapes A,B] [--reps MS]
    python -m ringsp_bench.kernel_variants --summarize OUT.json    # the table of a (partial) run

Shapes (bf16, B=1): the five of ringsp_bench.attn_kernels, and one rank's ring work (q = S/N rows,
the sequence's S keys in N blocks) for Qwen-Image 1328^2 at N = 2, 4, 8 and Wan 480p at N=4.
Per shape and candidate it times, with triton.testing.do_bench medians:
  fwd    attention of q over all keys in one call (q's dtype out, with LSE)
  chain  empty state + `steps` fused steps over equal key blocks + finalize
TFLOP/s = 4*B*H*Sq*Sk*D / time (Sk = all keys, for both). Candidates:
  cudnn            aten._scaled_dot_product_cudnn_attention with LSE; its chain is cuDNN per
                   block + ringsp's one-pass merge (triton_merge), the dispatcher's other path
  current          ringsp_kernels.cuda.triton_attn.launch, the best of its Hopper configs
The persistent, pipelined and split-KV candidates measured in bench/results/kernel_variants_h200.json
lost to `current` on every shape (bench/RESULTS.md) and were removed from the library.
Every candidate's output and LSE are compared with cuDNN's before it is timed; a candidate
that is wrong or does not compile is skipped and reported, the others still run. Kernels
are compiled first in parallel worker processes (--jobs) on miniature shapes with the same
specialisation, so the timed run finds them in Triton's cache.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback

import torch

# name, Sq, Sk (all keys), H, D, steps of the chain
SHAPES = [
    ("wan1.3b-480p", 32760, 32760, 12, 128, 4),
    ("wan1.3b-half", 16380, 16380, 12, 128, 4),
    ("wan-720p-h5", 75600, 75600, 5, 128, 4),
    ("qwen-1328", 7146, 7146, 24, 128, 4),
    ("d64", 16380, 16380, 24, 64, 4),
    ("qwen-1328-ring2", 3573, 7146, 24, 128, 2),
    ("qwen-1328-ring4", 1787, 7146, 24, 128, 4),
    ("qwen-1328-ring8", 894, 7146, 24, 128, 8),
    ("wan-480p-ring4", 8190, 32760, 12, 128, 4),
]
MAX_REL_ERR = 1e-2  # bf16 output (fwd) / float32 state from bf16 blocks (chain) vs cuDNN
MAX_LSE_ERR = 2e-2


def flops(H, Sq, Sk, D):
    return 4.0 * H * Sq * Sk * D


def blocks(Sk, steps):
    return [(i * Sk // steps, (i + 1) * Sk // steps) for i in range(steps)]


# --- candidates: each is fn(q, k, v, out, lse, kv_len, has_state) running one launch -------

def cudnn_attn(q, k, v, scale):
    res = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True, scale=scale)
    return res[0].transpose(1, 2), res[1].reshape(q.shape[0], q.shape[2], q.shape[1]).float()


def _cudnn_step(q, k, v, acc, lse, kv_len, has_state):
    from ringsp_kernels.cuda.triton_merge import launch_merge

    out, lse_blk = cudnn_attn(q, k[:, :kv_len], v[:, :kv_len], q.shape[-1] ** -0.5)
    if has_state:
        launch_merge(acc, lse, out, lse_blk)
    else:
        acc.copy_(out)
        lse.copy_(lse_blk)


def _current(config):
    def step(q, k, v, acc, lse, kv_len, has_state):
        from ringsp_kernels.cuda import triton_attn

        triton_attn.launch(q, k, v, acc, lse, q.shape[-1] ** -0.5, kv_len, has_state, config=config)
    return step


def current_configs(D):
    """The current kernel's Hopper tuning list (without its warp-specialisation flag, which
    Triton 3.6 compiles to the same SASS on sm_90)."""
    from ringsp_kernels.cuda import triton_attn

    seen = []
    for c in triton_attn.configs(9, D):
        c = tuple(c[:4]) + (False,)
        if c not in seen:
            seen.append(c)
    return seen


def _cfg_name(cfg):
    return "-".join(str(int(x)) for x in cfg)


def candidates(D, Sq, Sk, H, steps, force_splits=None):
    """name -> (step fn or the reason it is unavailable, group): candidates of one group are
    configs of one kernel, of which the table shows the fastest. `force_splits` is for a
    candidate that splits the KV block (precompiling on miniature shapes, which would not)."""
    out = {"cudnn": (_cudnn_step, "cudnn")}
    for cfg in current_configs(D):
        out["current:" + _cfg_name(cfg)] = (_current(cfg), "current")
    return out


# --- running -------------------------------------------------------------------------------

def make_inputs(Sq, Sk, H, D, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(1, s, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for s in (Sq, Sk, Sk)]


def runners(step, q, k, v, steps):
    B, Sq, H, D = q.shape
    out = torch.empty_like(q)
    lse_out = torch.empty(B, H, Sq, device=q.device)

    def fwd():
        step(q, k, v, out, lse_out, k.shape[1], False)
        return out, lse_out

    def chain():
        acc = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
        lse = torch.full((B, H, Sq), float("-inf"), device=q.device)
        for a, b in blocks(k.shape[1], steps):
            step(q, k[:, a:b], v[:, a:b], acc, lse, b - a, True)
        return acc.to(q.dtype), lse

    return fwd, chain


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def check(fwd, chain, ref_out, ref_lse):
    errs = {}
    for name, fn in (("fwd", fwd), ("chain", chain)):
        o, lse = fn()
        torch.cuda.synchronize()
        errs[name] = (rel(o, ref_out), (lse - ref_lse).abs().max().item())
    bad = [n for n, (e, le) in errs.items() if not (e < MAX_REL_ERR and le < MAX_LSE_ERR)]
    return errs, bad


def mini(Sq, Sk, steps):
    """Small sizes with the residues mod 16 that Triton specialises on (same kernels)."""
    def m(n):
        return 128 * steps + n % 16
    return m(Sq), m(Sk)


def precompile_worker(jobs):
    """Compiles (by running) each (shape, candidate) job at its miniature size; returns errors."""
    torch.cuda.init()
    errors = {}
    for shape, cand in jobs:
        name, Sq, Sk, H, D, steps = shape
        sq, sk = mini(Sq, Sk, steps)
        try:
            step = candidates(D, Sq, Sk, H, steps, force_splits=2)[cand][0]
            if isinstance(step, str):
                continue
            q, k, v = make_inputs(sq, sk, H, D, 0)
            for fn in runners(step, q, k, v, steps):
                fn()
            torch.cuda.synchronize()
        except Exception as e:  # reported by the timed run, which tries again
            errors[f"{name}/{cand}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return errors


def precompile(shapes, n_jobs):
    """One job per kernel specialisation (candidate, D, Sq/Sk divisibility), spread over
    n_jobs processes; they fill Triton's on-disk cache."""
    import multiprocessing as mp

    seen, jobs = set(), []
    for shape in shapes:
        _, Sq, Sk, H, D, steps = shape
        for cand in candidates(D, Sq, Sk, H, steps):
            key = (cand, D, Sq % 16 == 0, Sk % 16 == 0)
            if key not in seen:
                seen.add(key)
                jobs.append((shape, cand))
    t0 = time.time()
    chunks = [jobs[i::n_jobs] for i in range(n_jobs) if jobs[i::n_jobs]]
    ctx = mp.get_context("spawn")
    errors = {}
    with ctx.Pool(len(chunks)) as pool:
        for err in pool.map(precompile_worker, chunks):
            errors.update(err)
    print(f"# precompiled {len(jobs)} kernels in {len(chunks)} processes: {time.time() - t0:.1f} s", flush=True)
    for k, e in errors.items():
        print(f"#   precompile {k}: {e}", flush=True)
    return {"jobs": len(jobs), "seconds": time.time() - t0, "errors": errors}


def run_shape(shape, bench):
    name, Sq, Sk, H, D, steps = shape
    q, k, v = make_inputs(Sq, Sk, H, D, Sq + Sk)
    ref_out, ref_lse = cudnn_attn(q, k, v, D ** -0.5)
    fl = flops(H, Sq, Sk, D)
    entry = {"Sq": Sq, "Sk": Sk, "H": H, "D": D, "steps": steps, "results": {}}
    for cand, (step, group) in candidates(D, Sq, Sk, H, steps).items():
        res = {"group": group}
        entry["results"][cand] = res
        if isinstance(step, str):
            res["skipped"] = f"unavailable: {step}"
            continue
        try:
            fwd, chain = runners(step, q, k, v, steps)
            res["errors"], bad = check(fwd, chain, ref_out, ref_lse)
            if bad:
                res["skipped"] = f"wrong result ({', '.join(bad)}): {res['errors']}"
                continue
            for mode, fn in (("fwd", fwd), ("chain", chain)):
                ms = bench(fn)
                res[f"{mode}_ms"], res[f"{mode}_tflops"] = ms, fl / ms / 1e9
        except Exception as e:  # a config the compiler or the chip refuses: report, go on
            res["skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            res["trace"] = traceback.format_exc()[-2000:]
    del q, k, v
    torch.cuda.empty_cache()
    return entry


def best_per_group(entry):
    """group -> (candidate, result) with the fastest fwd and the fastest chain (separately)."""
    out = {}
    for mode in ("fwd", "chain"):
        for cand, res in entry["results"].items():
            ms = res.get(f"{mode}_ms")
            g = res["group"]
            if ms is not None and (out.get((g, mode)) is None or ms < out[(g, mode)][1]):
                out[(g, mode)] = (cand, ms)
    return out


def summary(report):
    found = {r["group"] for e in report["shapes"].values() for r in e["results"].values()}
    groups = ["cudnn", "current"] + sorted(found - {"cudnn", "current"})  # an older run's candidates too
    lines = ["", "TFLOP/s (x cuDNN) per shape, fastest config of each kernel; chain = init + steps + finalize",
             f"{'shape':18s} {'mode':5s} " + " ".join(f"{g:>15s}" for g in groups)]
    for name, entry in report["shapes"].items():
        best = best_per_group(entry)
        fl = flops(entry["H"], entry["Sq"], entry["Sk"], entry["D"])
        for mode in ("fwd", "chain"):
            ref = best.get(("cudnn", mode))
            cells = []
            for g in groups:
                b = best.get((g, mode))
                if b is None:
                    cells.append(f"{'-':>15s}")
                    continue
                ratio = f"x{ref[1] / b[1]:.3f}" if ref else ""
                cells.append(f"{fl / b[1] / 1e9:7.0f} {ratio:>7s}")
            lines.append(f"{name:18s} {mode:5s} " + " ".join(cells))
    skipped = [(n, c, r["skipped"]) for n, e in report["shapes"].items() for c, r in e["results"].items()
               if "skipped" in r]
    if skipped:
        lines.append("skipped:")
        seen = set()
        for n, c, why in skipped:
            if (c, why[:60]) not in seen:
                seen.add((c, why[:60]))
                lines.append(f"  {c} ({n}...): {why[:200]}")
    return "\n".join(lines)


def versions(args):
    import triton

    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
            "sms": torch.cuda.get_device_properties(0).multi_processor_count,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--jobs", type=int, default=8, help="processes compiling kernels first (0: none)")
    p.add_argument("--quick", action="store_true", help="two shapes only")
    p.add_argument("--shapes", help="comma-separated shape names (default: all)")
    p.add_argument("--reps", type=int, default=60, help="do_bench timing window per candidate, ms")
    p.add_argument("--summarize", metavar="JSON", help="only print the table of an earlier run's JSON")
    args = p.parse_args()
    if args.summarize:
        with open(args.summarize) as f:
            print(summary(json.load(f)))
        return
    if not torch.cuda.is_available():
        sys.exit("ringsp_bench.kernel_variants needs a CUDA GPU")
    import triton

    shapes = SHAPES[:2] if args.quick else SHAPES
    if args.shapes:
        want = args.shapes.split(",")
        shapes = [s for s in SHAPES if s[0] in want]
    report = {"meta": versions(args), "shapes": {}}
    print(f"# {report['meta']['device']}  torch {torch.__version__}  triton {triton.__version__}", flush=True)
    t0 = time.time()
    if args.jobs > 0:
        report["precompile"] = precompile(shapes, args.jobs)

    def bench(fn):
        return triton.testing.do_bench(fn, warmup=15, rep=args.reps, return_mode="median")

    for shape in shapes:
        t = time.time()
        entry = report["shapes"][shape[0]] = run_shape(shape, bench)
        best = best_per_group(entry)
        cells = ", ".join(f"{g}/{m} {flops(shape[3], shape[1], shape[2], shape[4]) / ms / 1e9:.0f} ({c})"
                          for (g, m), (c, ms) in sorted(best.items()))
        print(f"## {shape[0]} ({time.time() - t:.1f} s): {cells}", flush=True)
        if args.json:  # partial results survive a timeout
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    report["meta"]["seconds"] = time.time() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(summary(report), flush=True)


if __name__ == "__main__":
    main()
