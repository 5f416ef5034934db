"""Kernel check + microbenchmark on the best device present.

    python -m ringsp_kernels [--device cuda|cpu] [--seq 4096] [--heads 12] [--head-dim 128]

Checks attn_fwd and a 4-block attn_step_ chain against float64 attention on random inputs,
then times them next to torch's SDPA and prints a table (TFLOP/s = 4*B*H*Sq*Sk*D / time).
"""
import argparse
import time

import torch

import ringsp_kernels as rk


def _timed(fn, device, reps):
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def _chain(q, k, v, blocks=4):
    acc, lse = rk.init_state(q)
    S = k.shape[1]
    for i in range(blocks):
        a, b = i * S // blocks, (i + 1) * S // blocks
        rk.attn_step_(q, k[:, a:b], v[:, a:b], acc, lse)
    return rk.finalize(acc, lse, q.dtype), lse


def check(device, dtype):
    """Max abs error against float64 on a small random case with padding and uneven blocks."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 3, 64, generator=g).to(device, dtype) for n in (77, 150, 150))
    ref, ref_lse = rk.reference_attention(q, k, v, kv_len=131)
    out, lse = rk.attn_fwd(q, k, v, kv_len=131)
    err_fwd = max((out.cpu().double() - ref).abs().max().item(), (lse.cpu().double() - ref_lse).abs().max().item())
    ref, _ = rk.reference_attention(q, k, v)
    err_chain = (_chain(q, k, v)[0].cpu().double() - ref).abs().max().item()
    return err_fwd, err_chain


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seq", type=int, default=None, help="Sq = Sk (default 16380 on GPU, 2048 on CPU)")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=128, choices=[64, 128])
    p.add_argument("--reps", type=int, default=None)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is present")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    S = args.seq or (16380 if args.device == "cuda" else 2048)
    reps = args.reps or (20 if args.device == "cuda" else 2)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"ringsp kernel check on {name} ({dtype}, torch {torch.__version__})")
    err_fwd, err_chain = check(args.device, dtype)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    ok = err_fwd < tol and err_chain < tol
    print(f"  vs float64: attn_fwd max err {err_fwd:.2e}, 4-step chain max err {err_chain:.2e} -> {'OK' if ok else 'FAIL'}")

    q, k, v = (torch.randn(1, S, args.heads, args.head_dim, device=args.device, dtype=dtype) for _ in range(3))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    flops = 4.0 * args.heads * S * S * args.head_dim
    rows = [
        ("ringsp attn_fwd", lambda: rk.attn_fwd(q, k, v)),
        ("ringsp 4x attn_step_", lambda: _chain(q, k, v)),
        ("torch SDPA", lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)),
    ]
    print(f"\n  B=1 S={S} H={args.heads} D={args.head_dim}")
    print(f"  {'kernel':24s} {'ms':>10s} {'TFLOP/s':>9s}")
    for label, fn in rows:
        sec = _timed(fn, args.device, reps)
        print(f"  {label:24s} {sec * 1e3:10.2f} {flops / sec / 1e12:9.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
