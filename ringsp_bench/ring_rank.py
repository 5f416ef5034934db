"""One rank's share of sequence-parallel attention, on one GPU: the bound every SP speed-up
lives under, since N ranks can at best finish in the time one rank needs for its share.

    python -m ringsp_bench.ring_rank [--json OUT.json] [--degrees 2,4,8] [--shapes wan-480p,...]
                              [--rounds 2] [--reps 60]

For Wan 480p (S=32760, H=12), Wan 720p (S=75600, H=12) and Qwen-Image 1328^2 (S=7146,
H=24), D=128, bf16, B=1, and N = 2, 4, 8:
  ring     the rank's S/N queries over N KV blocks of S/N keys (init_state + N steps +
           finalize; the last block is padded, as the ring pads it), through ringsp with the
           automatic dispatch, forced Triton (the fused step), forced cuDNN + one-pass merge,
           forced FA4 + one-pass merge (where flash-attn-4 is installed), and the peers' way:
           cuDNN per block + eager float32 merge
           `out - sigmoid(lse_blk - lse) * (out - out_blk)` (ring-flash-attn, xDiT, ...).
  ulysses  the rank's ceil(H/N) heads over the full S (one attn_fwd; bare cuDNN; bare FA4).
T1 = one cuDNN attention over the whole sequence with all heads; bound = T1 / (N * T_rank).
Times are medians over `--rounds` interleaved rounds of do_bench medians.
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F

from ringsp_kernels.cuda.tune import DEGREES, RING_SHAPES  # `tune --set ring` measures these classes
from .attn_kernels import timed, versions  # the shared timing and run metadata

D = 128


def peers_ring(q, blocks, scale, cudnn_attn):
    """cuDNN per block, merged in float32 torch ops the way the peers' rings do it."""
    out = lse = None
    for kb, vb, n in blocks:
        o, l_blk = cudnn_attn(q, kb, vb, scale, n)
        o, l_blk = o.float(), l_blk.transpose(1, 2).unsqueeze(-1)  # lse as [B, S, H, 1]
        if out is None:
            out, lse = o, l_blk
        else:
            out = out - torch.sigmoid(l_blk - lse) * (out - o)
            lse = lse - F.logsigmoid(lse - l_blk)
    return out.to(q.dtype)


def ringsp_ring(q, blocks, scale, rk):
    acc, lse = rk.init_state(q)
    for kb, vb, n in blocks:
        rk.attn_step_(q, kb, vb, acc, lse, scale, n)
    return rk.finalize(acc, lse, q.dtype)


def ring_blocks(S, N, H, g):
    """N key/value blocks of ceil(S/N) rows each (the last one padded), and their lengths."""
    blk = math.ceil(S / N)
    out = []
    for i in range(N):
        kb, vb = (torch.randn(1, blk, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
        out.append((kb, vb, min(blk, S - i * blk)))
    return blk, out


def measure_ring(S, H, N, T1, bench, rounds, g):
    import ringsp_kernels as rk
    from ringsp_kernels import dispatch
    from ringsp_kernels.cuda import fa4, hopper
    from ringsp_kernels.cuda import ops as cuda

    blk, blocks = ring_blocks(S, N, H, g)
    q = torch.randn(1, blk, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    scale = D ** -0.5

    def forced(path):
        def run():
            with cuda.forced(path):
                return ringsp_ring(q, blocks, scale, rk)
        return run

    fns = {"ringsp[auto]": lambda: ringsp_ring(q, blocks, scale, rk), "ringsp[triton]": forced("triton"),
           "ringsp[cudnn+merge]": forced("cudnn"), "peers": lambda: peers_ring(q, blocks, scale, cuda.cudnn_attn)}
    if fa4.available():
        fns["ringsp[fa4+merge]"] = forced("fa4")
    if hopper.usable(q):
        fns["ringsp[hopper]"] = forced("hopper")
    fns["ringsp[auto]"]()  # resolves the dispatch (a class no table knows is measured now)
    ms = timed(fns, bench, rounds)
    key = dispatch.class_key(cuda.device_name(q.get_device()), q.dtype, D, H, 1, blk, blk, "step")
    return {"Sq": blk, "Sk": blk, "ms": ms, "bound": {n: T1 / (N * t) for n, t in ms.items()},
            "dispatch": dispatch.lookup(key, cuda.versions())}


def full_attention_ms(S, H, g, bench, rounds):
    """T1: one cuDNN attention over the whole sequence, all heads."""
    from ringsp_kernels.cuda import ops as cuda

    q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    return timed({"T1": lambda: cuda.cudnn_attn(q, k, v, D ** -0.5, S)}, bench, rounds)["T1"]


def measure_ulysses(S, H, N, T1, bench, rounds, g):
    import ringsp_kernels as rk
    from ringsp_kernels.cuda import fa4, hopper
    from ringsp_kernels.cuda import ops as cuda

    h = math.ceil(H / N)
    q, k, v = (torch.randn(1, S, h, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    fns = {"ringsp[auto]": lambda: rk.attn_fwd(q, k, v), "cudnn": lambda: cuda.cudnn_attn(q, k, v, D ** -0.5, S)}
    if fa4.available():
        fns["fa4"] = lambda: fa4.attention(q, k, v, D ** -0.5, S)
    if hopper.usable(q):
        fns["hopper"] = lambda: hopper.attn_fwd(q, k, v, D ** -0.5, S)
    fns["ringsp[auto]"]()
    ms = timed(fns, bench, rounds)
    return {"heads": h, "ms": ms, "bound": {n: T1 / (N * t) for n, t in ms.items()}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--degrees", default=",".join(map(str, DEGREES)))
    p.add_argument("--shapes", default=",".join(n for n, _, _ in RING_SHAPES))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reps", type=int, default=60, help="do_bench window per candidate and round, ms")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("ringsp_bench.ring_rank needs a CUDA GPU")
    import logging

    import triton

    logging.basicConfig(format="%(message)s")
    logging.getLogger("ringsp").setLevel(logging.INFO)  # shows any class measured here
    bench = lambda fn: triton.testing.do_bench(fn, warmup=10, rep=args.reps, return_mode="median")  # noqa: E731
    degrees = [int(x) for x in args.degrees.split(",")]
    wanted = args.shapes.split(",")
    report = {"meta": versions(), "D": D, "dtype": "bfloat16", "shapes": {}}
    print(f"# {report['meta']['device']}  torch {torch.__version__}  triton {triton.__version__}", flush=True)
    for name, S, H in RING_SHAPES:
        if name not in wanted:
            continue
        g = torch.Generator(device="cuda").manual_seed(S)
        T1 = full_attention_ms(S, H, g, bench, args.rounds)
        entry = {"S": S, "H": H, "T1_ms": T1, "ring": {}, "ulysses": {}}
        for N in degrees:
            entry["ring"][str(N)] = measure_ring(S, H, N, T1, bench, args.rounds, g)
            entry["ulysses"][str(N)] = measure_ulysses(S, H, N, T1, bench, args.rounds, g)
            torch.cuda.empty_cache()
        report["shapes"][name] = entry
        print_shape(name, entry)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


def print_shape(name, e):
    print(f"\n## {name}: S={e['S']} H={e['H']} D={D}  T1 (cuDNN, whole sequence) {e['T1_ms']:.3f} ms", flush=True)
    cols = [c for c in ("ringsp[auto]", "ringsp[triton]", "ringsp[cudnn+merge]", "ringsp[fa4+merge]", "peers")
            if c in next(iter(e["ring"].values()))["ms"]]
    print(f"  {'N':>2s} {'ring T_rank ms: ' + ' / '.join(cols):72s} bound T1/(N*T_rank)     ulysses bound (auto, cudnn[, fa4])")
    for N, r in e["ring"].items():
        u = e["ulysses"][N]
        ms = " / ".join(f"{r['ms'][c]:.3f}" for c in cols)
        bound = " / ".join(f"{r['bound'][c]:.3f}" for c in cols)
        path = (r["dispatch"] or {}).get("path", "?")
        ub = ", ".join(f"{u['bound'][c]:.3f}" for c in ("ringsp[auto]", "cudnn", "fa4") if c in u["bound"])
        print(f"  {N:>2s} {ms:72s} {bound}  [{path}]  H={u['heads']}: {ub}", flush=True)


if __name__ == "__main__":
    main()
