"""CPU attention kernels vs torch's CPU SDPA: prints GFLOP/s (4*B*H*Sq*Sk*D / time).

    python -m ringsp_bench.kernels_cpu                       # default shapes, all dtypes
    python -m ringsp_bench.kernels_cpu --shapes 1x4096x12x128 --dtypes bf16 --json out.json

"ours" is rk.attn_fwd on [B, S, H, D] tensors; "sdpa" is
torch.nn.functional.scaled_dot_product_attention on the [B, H, S, D] views of the same
tensors (what a diffusers model would call). Times are the best of --repeat runs after
one warm-up, on torch's intra-op thread pool (torch.get_num_threads()).
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

import ringsp_kernels as rk

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_SHAPES = ["1x1024x12x64", "1x1024x12x128", "1x4096x12x64", "1x4096x12x128"]


def best_time(fn, repeat):
    fn()  # warm-up: kernel generation, allocator
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(B, S, H, D, dtype, repeat):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, S, H, D, generator=g).to(dtype) for _ in range(3))
    flops = 4 * B * H * S * S * D
    ours = best_time(lambda: rk.attn_fwd(q, k, v), repeat)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    sdpa = best_time(lambda: F.scaled_dot_product_attention(qt, kt, vt), repeat)
    return {"ours_s": ours, "sdpa_s": sdpa, "ours_gflops": flops / ours / 1e9, "sdpa_gflops": flops / sdpa / 1e9}


def cpu_model():
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_shape(text):
    try:
        B, S, H, D = (int(x) for x in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be BxSxHxD, got {text!r}") from None
    return B, S, H, D


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", type=parse_shape, default=[parse_shape(s) for s in DEFAULT_SHAPES])
    ap.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16", "fp16"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    print(f"threads={torch.get_num_threads()}  torch={torch.__version__}  cpu={torch.backends.cpu.get_cpu_capability()}")
    print(f"{'shape (BxSxHxD)':>18} {'dtype':>5} {'ours GF/s':>10} {'sdpa GF/s':>10} {'ours/sdpa':>9}")
    for B, S, H, D in args.shapes:
        for name in args.dtypes:
            r = measure(B, S, H, D, DTYPES[name], args.repeat)
            r.update(shape=[B, S, H, D], dtype=name)
            rows.append(r)
            print(f"{f'{B}x{S}x{H}x{D}':>18} {name:>5} {r['ours_gflops']:10.1f} {r['sdpa_gflops']:10.1f} "
                  f"{r['ours_gflops'] / r['sdpa_gflops']:9.2f}", flush=True)
    if args.json:
        meta = {
            "device": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
