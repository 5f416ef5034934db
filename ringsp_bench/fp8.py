"""8-bit attention benchmark: ringsp's "fp8" and "int8" precisions next to ringsp
bf16, cuDNN bf16 and SageAttention, with each one's accuracy against float64.

    python -m ringsp_bench.fp8 [--json OUT.json] [--quick] [--reps MS] [--no-sage]

For the shapes of ringsp_bench.attn_kernels (bf16 inputs, B=1, Sq=Sk=S) it prints and writes
TFLOP/s = 4*B*H*Sq*Sk*D / median time of:
  fp8 attn_fwd      rk.attn_fwd(q, k, v, precision="fp8"), K/V quantisation included
  fp8 chain4        init_state + 4 rk.attn_step_(..., precision="fp8") over S/4 key blocks + finalize
  fp8 quantise      the K/V quantisation alone (triton_fp8.prepare_kv), as a share of attn_fwd
  int8 attn_fwd / int8 chain4   the same with precision="int8"
  hopper int8 / hopper fp8 attn_fwd / chain4   the scheme on ringsp's Hopper kernel (sm90;
                    hopper.launch_q8, called directly, whether or not the dispatch may choose it)
  bf16 attn_fwd     rk.attn_fwd(q, k, v): ringsp's default bf16 path
  cudnn             torch.ops.aten._scaled_dot_product_cudnn_attention (bf16, with LSE)
  sage              sageattention.sageattn(q, k, v, tensor_layout="NHD") (INT8 Q.K, FP16 P.V)
and, for every output, cosine similarity and relative error against float64 attention over
all keys, on 256 evenly spaced query rows: on randn inputs and on randn whose K has channel
outliers (every 8th channel offset by +-30, as in tests/kernels/test_fp8.py).
"""
import argparse
import json
import sys

import torch

from .attn_kernels import SHAPES, flops, timed, versions

ROWS = 256
CHAINED = ("fp8", "int8", "hopper int8", "hopper fp8")  # the candidates timed as attn_fwd and chain4


def chain_key(candidate):
    return f"{candidate.replace(' ', '_')}_chain_over_fwd"


def chain(rk, q, k, v, precision):
    S = k.shape[1]

    def run():
        acc, lse = rk.init_state(q)
        for i in range(4):
            a, b = i * S // 4, (i + 1) * S // 4
            rk.attn_step_(q, k[:, a:b], v[:, a:b], acc, lse, precision=precision)
        return rk.finalize(acc, lse, q.dtype)
    return run


def quantise_only(triton_fp8, k, v):
    triton_fp8.prepare_kv(k, v, k.shape[1], int8=False)  # timing only: no output


def candidates(q, k, v, sage):
    """name -> a function returning the attention output [B, S, H, D] (or None: timing only)."""
    import ringsp_kernels as rk
    from ringsp_kernels.cuda import triton_fp8

    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    out = {
        "fp8 attn_fwd": lambda: rk.attn_fwd(q, k, v, precision="fp8")[0],
        "fp8 chain4": chain(rk, q, k, v, "fp8"),
        "fp8 quantise": lambda: quantise_only(triton_fp8, k, v),
        "int8 attn_fwd": lambda: rk.attn_fwd(q, k, v, precision="int8")[0],
        "int8 chain4": chain(rk, q, k, v, "int8"),
        "bf16 attn_fwd": lambda: rk.attn_fwd(q, k, v)[0],
        "cudnn": lambda: torch.ops.aten._scaled_dot_product_cudnn_attention(qt, kt, vt, None, True)[0].transpose(1, 2),
    }
    for precision in ("int8", "fp8"):
        out.update(hopper_q8(rk, q, k, v, precision))
    if sage is not None:
        k_sage = k.clone()  # sageattn subtracts K's mean from k in place
        out["sage"] = lambda: sage(q, k_sage, v, tensor_layout="NHD")
    return out


def hopper_q8(rk, q, k, v, precision):
    """An 8-bit scheme on ringsp's warp-specialised Hopper kernel (sm90 only)."""
    from ringsp_kernels.cuda import hopper

    if not hopper.usable(q):
        return {}
    S, scale = k.shape[1], q.shape[-1] ** -0.5

    def chain4():
        acc, lse = rk.init_state(q)
        for i in range(4):
            a, b = i * S // 4, (i + 1) * S // 4
            hopper.launch_q8(q, k[:, a:b], v[:, a:b], acc, lse, scale, b - a, True, precision)
        return rk.finalize(acc, lse, q.dtype)
    return {f"hopper {precision} attn_fwd": lambda: hopper.attn_fwd(q, k, v, scale, S, precision)[0],
            f"hopper {precision} chain4": chain4}


def float64_rows(q, k, v, idx):
    """Float64 attention of the query rows idx over all keys: [B, len(idx), H, D]."""
    s = torch.einsum("bqhd,bkhd->bhqk", q[:, idx].double(), k.double()) * q.shape[-1] ** -0.5
    return torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, -1), v.double())


def accuracy(fns, q, k, v):
    from ringsp_kernels.fp8_reference import accuracy as cos_rel

    idx = torch.linspace(0, q.shape[1] - 1, ROWS, device=q.device).long()
    ref = float64_rows(q, k, v, idx)
    res = {}
    for name, fn in fns.items():
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 -- report it, measure the others
            res[name] = f"failed: {type(e).__name__}: {str(e)[:160]}"
            continue
        if out is not None:
            cos, rel = cos_rel(out[:, idx], ref)
            res[name] = {"cos": cos, "rel": rel}
    del ref
    return res


def with_channel_outliers(k):
    off = torch.zeros(k.shape[-1], device=k.device)
    off[::8] = 30.0
    off[8::16] = -30.0
    return (k.float() + off).to(k.dtype)


def measure(name, S, H, D, args, sage, bench):
    from ringsp_kernels.cuda import q8

    g = torch.Generator(device="cuda").manual_seed(S)
    q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    fl = flops(1, H, S, S, D)
    entry = {"S": S, "H": H, "D": D, "accuracy": accuracy(candidates(q, k, v, sage), q, k, v)}
    entry["fp8_config"] = list(q8.block(q, k, v, None, S, "fp8", False))  # the dispatch's, for attn_fwd
    ko = with_channel_outliers(k)
    entry["accuracy_k_outliers"] = accuracy(
        {n: f for n, f in candidates(q, ko, v, sage).items() if "chain" not in n and "quantise" not in n}, q, ko, v)
    del ko
    fns = candidates(q, k, v, sage)
    ms = {}
    for cand, fn in fns.items():  # one at a time first: a failing candidate must not stop the rest
        try:
            bench(fn)
            ms[cand] = None
        except Exception as e:  # noqa: BLE001
            ms[cand] = f"failed: {type(e).__name__}: {str(e)[:160]}"
    ok = {c: fns[c] for c, m in ms.items() if m is None}
    ms.update(timed(ok, bench, args.rounds))
    entry["ms"] = ms
    entry["tflops"] = {c: fl / m / 1e9 for c, m in ms.items() if isinstance(m, float)}
    cudnn = ms.get("cudnn")
    if isinstance(cudnn, float):
        entry["ratio_to_cudnn"] = {c: cudnn / m for c, m in ms.items() if isinstance(m, float)}
    for p in CHAINED:
        fwd, ch = ms.get(f"{p} attn_fwd"), ms.get(f"{p} chain4")
        if isinstance(fwd, float) and isinstance(ch, float):
            entry[chain_key(p)] = ch / fwd
    if isinstance(ms.get("fp8 quantise"), float) and isinstance(ms.get("fp8 attn_fwd"), float):
        entry["fp8_quantise_share"] = ms["fp8 quantise"] / ms["fp8 attn_fwd"]
    return entry


def print_entry(name, e):
    print(f"\n## {name}: S={e['S']} H={e['H']} D={e['D']}  (fp8 config: {e.get('fp8_config')})")
    for cand, m in e["ms"].items():
        if not isinstance(m, float):
            print(f"  {cand:14s} {m}")
            continue
        acc = e["accuracy"].get(cand)
        acco = e["accuracy_k_outliers"].get(cand)
        fmt = lambda a: f"cos {a['cos']:.6f} rel {a['rel']:.2e}" if isinstance(a, dict) else (a or "-")  # noqa: E731
        ratio = e.get("ratio_to_cudnn", {}).get(cand, 0)
        print(f"  {cand:14s} {m:9.3f} ms {e['tflops'][cand]:7.1f} TFLOP/s x{ratio:.3f} of cuDNN"
              f" | randn {fmt(acc)} | K outliers {fmt(acco)}")
    keys = tuple(map(chain_key, CHAINED)) + ("fp8_quantise_share",)
    print("  " + "  ".join(f"{k}={e[k]:.3f}" for k in keys if k in e))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here (rewritten after every shape)")
    p.add_argument("--quick", action="store_true", help="first two shapes only")
    p.add_argument("--reps", type=int, default=100, help="timing window per candidate and round, ms")
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (median)")
    p.add_argument("--no-sage", action="store_true", help="leave SageAttention out")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("ringsp_bench.fp8 needs a CUDA GPU")
    import logging

    import triton

    logging.basicConfig(format="%(message)s")
    logging.getLogger("ringsp").setLevel(logging.INFO)
    sage, meta = None, versions()
    if not args.no_sage:
        try:
            from importlib.metadata import version

            from sageattention import sageattn as sage
            meta["sageattention"] = version("sageattention")
        except Exception as e:  # noqa: BLE001 -- the rest of the table is still worth having
            meta["sageattention"] = f"unavailable: {type(e).__name__}: {e}"
    meta["capability"] = list(torch.cuda.get_device_capability())
    bench = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=args.reps, return_mode="median")  # noqa: E731
    report = {"meta": meta, "shapes": {}}
    print(f"# {meta['device']}  torch {torch.__version__}  triton {triton.__version__}  "
          f"sageattention {meta.get('sageattention', 'off')}", flush=True)
    for name, S, H, D in SHAPES[:2] if args.quick else SHAPES:
        try:
            entry = measure(name, S, H, D, args, sage, bench)
        except Exception as e:  # noqa: BLE001 -- keep the other shapes
            entry = {"S": S, "H": H, "D": D, "error": f"{type(e).__name__}: {str(e)[:300]}"}
            print(f"\n## {name}: failed: {entry['error']}", flush=True)
        else:
            print_entry(name, entry)
        report["shapes"][name] = entry
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
