"""VAE decode scaling: ringsp.parallel_vae_decode on N GPUs vs diffusers' vae.decode and its
enable_tiling() decode on one GPU. One launch per world size, then one report:

    torchrun --nproc-per-node 1 -m ringsp_bench.vae_decode --json OUT_w1.json
    torchrun --nproc-per-node 2 -m ringsp_bench.vae_decode --json OUT_w2.json
    torchrun --nproc-per-node 4 -m ringsp_bench.vae_decode --json OUT_w4.json
    python -m ringsp_bench.vae_decode --report OUT_w1.json OUT_w2.json OUT_w4.json

Models are built from the published configs (Wan2.1-T2V-1.3B's VAE = AutoencoderKLWan's
defaults; Qwen-Image's VAE = AutoencoderKLQwenImage's defaults) with random weights, bf16.
Cases: Wan2.1 81 frames (21 latent frames) at 480p (latent 60x104) and 720p (90x160);
Qwen-Image 1328x1328 (latent 166x166, 1 frame). World size 1 times "decode" (plain
vae.decode) and "tiled" (vae.enable_tiling() with diffusers' default tiles); N > 1 times
"ringsp". Per case: median / min seconds of --iters timed runs after --warmup, and the peak
allocated memory of every rank (torch.cuda.max_memory_allocated, weights included).

--sweep adds small decodes ("sweep-*", forced onto the parallel path at N > 1) whose
crossover against the one-GPU decode is what DEFAULT_MIN_PARALLEL_PIXELS in
ringsp/vae/decode.py should be set to; --report prints that crossover.
--device cpu --tiny is a smoke run of the script itself on gloo (tiny random VAEs).
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.distributed as dist

# name -> (family, latent shape [B, C, T, H, W])
CASES = {
    "wan21-480p-81f": ("wan21", (1, 16, 21, 60, 104)),
    "wan21-720p-81f": ("wan21", (1, 16, 21, 90, 160)),
    "qwenimage-1328": ("qwenimage", (1, 16, 1, 166, 166)),
}
SWEEP = {
    "sweep-qwenimage-256": ("qwenimage", (1, 16, 1, 32, 32)),
    "sweep-qwenimage-512": ("qwenimage", (1, 16, 1, 64, 64)),
    "sweep-qwenimage-768": ("qwenimage", (1, 16, 1, 96, 96)),
    "sweep-qwenimage-1024": ("qwenimage", (1, 16, 1, 128, 128)),
    "sweep-wan21-480p-1f": ("wan21", (1, 16, 1, 60, 104)),
    "sweep-wan21-480p-5f": ("wan21", (1, 16, 2, 60, 104)),
    "sweep-wan21-480p-17f": ("wan21", (1, 16, 5, 60, 104)),
}
TINY = {
    "tiny-wan21": ("wan21", (1, 16, 3, 9, 7)),
    "tiny-qwenimage": ("qwenimage", (1, 16, 1, 11, 6)),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write this launch's results here (rank 0)")
    p.add_argument("--report", nargs="+", metavar="JSON", help="print the combined table of earlier launches")
    p.add_argument("--cases", nargs="+", help="case names to run (default: all of the chosen set)")
    p.add_argument("--sweep", action="store_true", help="also run the small threshold-sweep decodes")
    p.add_argument("--tiny", action="store_true", help="tiny VAEs and latents (smoke run)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--output", choices=["rank0", "all"], default="rank0", help="where ringsp assembles the video")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--no-tiled", action="store_true", help="skip the enable_tiling() column")
    p.add_argument("--check", action="store_true", help="also compare ringsp's output with vae.decode (rank 0)")
    args = p.parse_args(argv)
    if args.warmup < 0 or args.iters < 1:
        p.error("--warmup must be >= 0 and --iters >= 1")
    return args


def selected_cases(args):
    table = dict(TINY) if args.tiny else dict(CASES)
    if args.sweep and not args.tiny:
        table.update(SWEEP)
    if args.cases:
        unknown = [c for c in args.cases if c not in {**CASES, **SWEEP, **TINY}]
        if unknown:
            raise SystemExit(f"unknown case(s) {unknown}; known: {sorted({**CASES, **SWEEP, **TINY})}")
        table = {c: {**CASES, **SWEEP, **TINY}[c] for c in args.cases}
    return table


def build_vae(family, tiny, dtype, device):
    from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan
    from diffusers.utils import logging

    logging.set_verbosity_error()  # .to(dtype) warns about fp32-kept modules; these have none

    torch.manual_seed(0)  # the same random weights on every rank
    kwargs = dict(base_dim=8) if tiny else {}
    vae = AutoencoderKLWan(**kwargs) if family == "wan21" else AutoencoderKLQwenImage(**kwargs)
    return vae.to(device=device, dtype=dtype).eval()


def output_pixels(vae, shape):
    from ringsp.vae.families import output_size

    frames, height, width = output_size(vae, shape)
    return shape[0] * frames * height * width


# ----------------------------------------------------------------------------- timing


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if dist.is_initialized():
        dist.barrier()


def time_runs(fn, device, warmup, iters):
    """(seconds per timed run, peak allocated bytes on this rank or None)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return times, peak


def methods(world, args, sweep):
    if world > 1:
        return ["ringsp"]
    return ["decode"] + ([] if args.no_tiled or sweep else ["tiled"])  # sweep sizes fit in one tile


def run_method(method, vae, z, args, sweep):
    import ringsp

    if method == "ringsp":
        forced = 0 if sweep or args.tiny else None
        return lambda: ringsp.parallel_vae_decode(vae, z, output=args.output, min_parallel_pixels=forced)

    def plain():
        with torch.no_grad(), tiling(vae, method == "tiled"):
            return vae.decode(z).sample

    return plain


@contextlib.contextmanager
def tiling(vae, on):
    if on:
        vae.enable_tiling()
    try:
        yield
    finally:
        vae.disable_tiling()


def measure_case(name, family, shape, args, device, dtype):
    world = dist.get_world_size() if dist.is_initialized() else 1
    vae = build_vae(family, args.tiny, dtype, device)
    g = torch.Generator(device="cpu").manual_seed(1)
    z = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    rows = []
    sweep = name.startswith("sweep")
    for method in methods(world, args, sweep):
        row = dict(case=name, family=family, latent_shape=list(shape), output_pixels=output_pixels(vae, shape),
                   method=method, world_size=world)
        try:
            times, peak = time_runs(run_method(method, vae, z, args, sweep), device,
                                    args.warmup, args.iters)
        except torch.cuda.OutOfMemoryError as exc:
            if world > 1:
                raise  # the other ranks are inside a collective: no clean way to go on
            row.update(error=f"OOM: {str(exc).splitlines()[0]}")
            torch.cuda.empty_cache()
            rows.append(row)
            continue
        row.update(median_s=statistics.median(times), min_s=min(times), times_s=times,
                   peak_gib_per_rank=gather_peaks(peak, device))
        if args.check and method == "ringsp":
            row["max_abs_err_vs_decode"] = check_against_decode(vae, z, args, device)
        rows.append(row)
    del vae, z
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def gather_peaks(peak, device):
    if peak is None:
        return None
    value = torch.tensor([peak / 2**30], dtype=torch.float64, device=device)
    if not dist.is_initialized():
        return [value.item()]
    out = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(out, value)
    return [t.item() for t in out]


def check_against_decode(vae, z, args, device):
    import ringsp

    got = ringsp.parallel_vae_decode(vae, z, output="rank0", min_parallel_pixels=0)
    if dist.get_rank() != 0:
        dist.barrier()
        return None
    with torch.no_grad():
        ref = vae.decode(z).sample
    dist.barrier()
    return (got.float() - ref.float()).abs().max().item()


# ----------------------------------------------------------------------------- reporting


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("diffusers", "triton", "ringsp"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing package is just not reported
            out[name] = None
    if torch.cuda.is_available():
        out["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        out["git_commit"] = None
    return out


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def format_table(rows, baseline=None):
    """One line per (case, method, world); speedup against the one-GPU plain decode."""
    head = f"{'case':<22} {'method':<7} {'N':>2} {'median s':>9} {'min s':>9} {'speedup':>8} {'peak GiB/rank':>14}"
    lines = [head, "-" * len(head)]
    base = baseline or {}
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:<22} {r['method']:<7} {r['world_size']:>2} {r['error']}")
            continue
        ref = base.get(r["case"])
        speedup = f"{ref / r['median_s']:8.2f}" if ref else f"{'-':>8}"
        peaks = r.get("peak_gib_per_rank")
        peak = f"{max(peaks):14.2f}" if peaks else f"{'-':>14}"
        lines.append(f"{r['case']:<22} {r['method']:<7} {r['world_size']:>2} {r['median_s']:9.3f} {r['min_s']:9.3f} "
                     f"{speedup} {peak}")
    return "\n".join(lines)


def decode_baseline(rows):
    return {r["case"]: r["median_s"] for r in rows if r["method"] == "decode" and "median_s" in r}


def crossover(rows):
    """Per world size N > 1: the smallest output size (pixels x frames) from which ringsp on
    N ranks beats the one-GPU decode for every larger measured case, or None."""
    base = decode_baseline(rows)
    out = {}
    for world in sorted({r["world_size"] for r in rows if r["world_size"] > 1}):
        points = sorted((r["output_pixels"], r["median_s"] < base[r["case"]]) for r in rows
                        if r["world_size"] == world and r["method"] == "ringsp" and r["case"] in base
                        and "median_s" in r)
        threshold = None
        for pixels, faster in reversed(points):
            if not faster:
                break
            threshold = pixels
        out[world] = threshold
    return out


def report(paths):
    rows, meta = [], []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        rows += data["results"]
        meta.append(f"{path}: N={data['world_size']} on {data['device']} ({data['date']})")
    rows.sort(key=lambda r: (r["case"], r["world_size"], r["method"]))
    print("\n".join(meta))
    print(format_table(rows, decode_baseline(rows)))
    for world, threshold in crossover(rows).items():
        print(f"N={world}: ringsp beats one GPU from {threshold} output pixels x frames on" if threshold else
              f"N={world}: no measured size where ringsp beats one GPU throughout")


# ----------------------------------------------------------------------------- main


def init_distributed(device_kind):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device_kind == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=10))
    return world


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        report(args.report)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("vae_decode: CUDA is not available; skipped (use --device cpu --tiny for a smoke run)",
              file=sys.stderr)
        return 0
    world = init_distributed(args.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    rows = []
    for name, (family, shape) in selected_cases(args).items():
        case_rows = measure_case(name, family, shape, args, device, dtype)
        rows += case_rows
        if rank == 0:  # progress: these rows as they come, without speedups yet
            print("\n".join(format_table(case_rows).splitlines()[2:]), flush=True)
    if rank == 0:
        print(format_table(rows, decode_baseline(rows)))
        if args.json:
            write_json(args.json, rows, world, device)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def launch_command():
    head = [os.path.basename(sys.executable)]
    if "LOCAL_WORLD_SIZE" in os.environ:  # started by torchrun
        head = ["torchrun", "--nproc-per-node", os.environ["LOCAL_WORLD_SIZE"]]
    return " ".join(head + sys.argv)


def write_json(path, rows, world, device):
    data = dict(
        benchmark="vae_decode", world_size=world, device=device_name(device), versions=versions(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=launch_command(), 
        results=rows,
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
