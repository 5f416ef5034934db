"""FLUX.1 and LTX-Video transformer forwards: ringsp vs diffusers with its default attention backend.

    python -m ringsp_bench.dit_forward --model flux.1-dev --json flux_forward_w1.json   # 1024 x 1024
    python -m ringsp_bench.dit_forward --model ltx-video --json ltx_forward_w1.json     # 768 x 512, 97 frames
    torchrun --nproc_per_node 2 -m ringsp_bench.dit_forward --model flux.1-dev ...       # SP over 2 GPUs

The published config with random weights (bf16), B = 1, inputs as the pipelines make them
(FLUX.1: 512 T5 tokens, pooled CLIP, position ids, guidance 3.5; LTX-Video: 128 T5 tokens of
which --text-valid are valid, the latent grid and its rotary scale at 25 fps). Rows:
  diffusers  its own forward on rank 0 alone, with the attention backend diffusers picks by
             default (none is set here: torch SDPA): the baseline
  ringsp     ringsp.enable_sequence_parallel for every (ulysses, ring) with u * r = W; at
             W = 1 that is ringsp's attention kernels with no communication
Each forward is timed (CUDA events) after --warmup untimed ones; an iteration's time is the
slowest rank's. The table shows the median, the speedup over diffusers, the max abs error
against diffusers' output (relative to its max abs value) and the peak memory of the busiest
rank; --json writes it with device, versions, date and command. --compile [regional|full]
times every row compiled too (ringsp.models.compile_transformer, static shapes).

Without CUDA it prints why and exits 0 (writing a JSON that says so). `--device cpu` with a
tiny model (`--model tiny-flux --size 48,80` or `--model tiny-ltx-video --size 96,160,17`)
runs the whole script on gloo, which checks the script, not the speed.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.distributed as dist

# family -> (diffusers class, default --size, default --text-len)
FAMILIES = {"flux": ("FluxTransformer2DModel", (1024, 1024), 512),
            "ltx": ("LTXVideoTransformer3DModel", (512, 768, 97), 128)}
LTX_FRAME_RATE = 25


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="flux.1-dev", help="a FLUX.1 or LTX-Video config name of ringsp.models.configs")
    p.add_argument("--size", default=None, help="H,W pixels (FLUX.1) or H,W,FRAMES (LTX-Video); default: "
                   "1024,1024 / 512,768,97")
    p.add_argument("--text-len", type=int, default=None, help="text tokens (default 512 / 128)")
    p.add_argument("--text-valid", type=int, default=None, help="LTX-Video: valid text tokens (default: all)")
    p.add_argument("--layers", type=int, default=None, help="override the number of blocks (quick runs)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--compile", nargs="?", const="regional", choices=("regional", "full"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or (args.text_len is not None and args.text_len < 1):
        p.error("--iters must be >= 1, --warmup >= 0, --text-len >= 1")
    return args


def family_of(name):
    from ringsp.models import configs

    if name in configs.FLUX_TRANSFORMERS:
        return "flux"
    if name in configs.LTX_TRANSFORMERS:
        return "ltx"
    raise SystemExit(f"--model {name!r} is not a FLUX.1 or LTX-Video config; known: "
                     f"{sorted(configs.FLUX_TRANSFORMERS) + sorted(configs.LTX_TRANSFORMERS)}")


def pixel_size(args, family):
    size = FAMILIES[family][1] if args.size is None else tuple(int(x) for x in args.size.split(","))
    if len(size) != len(FAMILIES[family][1]):
        raise SystemExit(f"--size {args.size!r}: {family} takes {'H,W' if family == 'flux' else 'H,W,FRAMES'}")
    return size


# ------------------------------------------------------------------------------ set-up


def init_distributed(device_type):
    """The default group: torchrun's, else a world of one."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device("cpu")
    if device_type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600),
                            **({"device_id": device} if device_type == "cuda" else {}))
    return device


def build_transformer(name, family, layers, dtype, device, seed):
    """The config with random weights, built on the device in dtype, rank 0's on every rank."""
    import diffusers

    from ringsp.models import configs
    from ringsp.models.pipelines.common import building_on, keep_fp32

    cfg = configs.transformer_config(name)
    if layers is not None:
        cfg["num_layers"] = layers
        if family == "flux":
            cfg["num_single_layers"] = 2 * layers  # FLUX.1's proportion: 19 + 38
    torch.manual_seed(seed)
    with building_on(device, dtype):
        model = keep_fp32(getattr(diffusers, FAMILIES[family][0]).from_config(cfg)).eval()
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)
    return model, cfg


def make_inputs(family, cfg, size, text_len, text_valid, dtype, device, seed):
    """(forward kwargs, image tokens S) as FluxPipeline / LTXPipeline make them."""
    gen = torch.Generator("cpu").manual_seed(seed + 1)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(device, dtype)  # noqa: E731
    if family == "flux":
        from diffusers import FluxPipeline

        grid = (size[0] // 16, size[1] // 16)  # VAE stride 8, packed 2 x 2
        seq_len = grid[0] * grid[1]
        return {"hidden_states": rand(1, seq_len, cfg["in_channels"]),
                "encoder_hidden_states": rand(1, text_len, cfg["joint_attention_dim"]),
                "pooled_projections": rand(1, cfg["pooled_projection_dim"]),
                "timestep": torch.full((1,), 0.5, device=device, dtype=dtype),
                "img_ids": FluxPipeline._prepare_latent_image_ids(1, *grid, device, dtype),
                "txt_ids": torch.zeros(text_len, 3, device=device, dtype=dtype),
                "guidance": torch.full((1,), 3.5, device=device, dtype=torch.float32) if cfg["guidance_embeds"]
                else None, "joint_attention_kwargs": {}, "return_dict": False}, seq_len
    height, width, frames = size
    grid = ((frames - 1) // 8 + 1, height // 32, width // 32)  # VAE: 8x temporal, 32x spatial, patch 1
    seq_len = grid[0] * grid[1] * grid[2]
    mask = (torch.arange(text_len) < (text_len if text_valid is None else text_valid))[None].to(device)
    return {"hidden_states": rand(1, seq_len, cfg["in_channels"]), "encoder_hidden_states":
            rand(1, text_len, cfg["caption_channels"]), "timestep": torch.full((1,), 500.0, device=device),
            "encoder_attention_mask": mask, "num_frames": grid[0], "height": grid[1], "width": grid[2],
            "rope_interpolation_scale": (8 / LTX_FRAME_RATE, 32, 32), "return_dict": False}, seq_len


# ------------------------------------------------------------------------------ timing and rows


def time_forward(model, inputs, args, device, variant, collective=True):
    """(per-iteration ms of the slowest rank, last output, peak GiB of the busiest rank, compile s);
    variant: None (eager) or a compile mode (then the first forward, which compiles, is timed apart)."""
    compile_s = None
    if variant:
        from ringsp.models import compile_transformer

        torch._dynamo.reset()
        compile_transformer(model, variant, dynamic=False)
        start = time.perf_counter()
        with torch.no_grad():
            model(**inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        compile_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with torch.no_grad():
        for i in range(args.warmup + args.iters):
            if collective:
                dist.barrier()
            if device.type == "cuda":
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                out = model(**inputs)[0]
                end.record()
                end.synchronize()
                ms = begin.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                out = model(**inputs)[0]
                ms = (time.perf_counter() - t0) * 1e3
            if i >= args.warmup:
                times.append(ms)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    stats = torch.tensor(times + [peak], dtype=torch.float64, device=device)
    if collective:
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    return stats[:-1].tolist(), out, float(stats[-1]), compile_s


def rel_error(out, ref):
    return None if ref is None else float((out.float() - ref.float()).abs().max() / ref.float().abs().max())


def run_rows(model, inputs, args, device):
    """The diffusers row, then a ringsp row per (ulysses, ring), for each variant (eager, compiled)."""
    import ringsp
    from ringsp.models import uncompile_transformer
    from ringsp.parallel import ParallelConfig, init_parallel

    world = dist.get_world_size()
    splits = [(u, world // u) for u in range(world, 0, -1) if world % u == 0]
    rows, ref, base_ms, contexts = [], None, None, {}
    for variant in [None] + ([args.compile] if args.compile else []):
        row = {"impl": "diffusers", "ulysses": 1, "ring": 1, "compile": variant}
        if dist.get_rank() == 0:
            try:
                times, out, peak, compile_s = time_forward(model, inputs, args, device, variant, collective=False)
                row.update(times_ms=times, peak_mem_gib=peak, compile_s=compile_s, max_rel_err=rel_error(out, ref))
                ref = out if ref is None else ref
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                row["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                uncompile_transformer(model)
        holder = [row]
        dist.broadcast_object_list(holder, src=0)
        rows.append(holder[0])
        if variant is None and "times_ms" in holder[0]:
            base_ms = statistics.median(holder[0]["times_ms"])
        for u, r in splits:
            row = {"impl": "ringsp", "ulysses": u, "ring": r, "compile": variant}
            try:
                if (u, r) not in contexts:  # one set of process groups per split
                    contexts[u, r] = init_parallel(ParallelConfig(ulysses_degree=u, ring_degree=r))
                ringsp.enable_sequence_parallel(model, contexts[u, r])
                try:
                    times, out, peak, compile_s = time_forward(model, inputs, args, device, variant)
                finally:
                    uncompile_transformer(model)
                    ringsp.disable_sequence_parallel(model)
                row.update(times_ms=times, peak_mem_gib=peak, compile_s=compile_s, max_rel_err=rel_error(out, ref))
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
    for row in rows:
        if "times_ms" in row:
            row["median_ms"] = statistics.median(row["times_ms"])
            row["speedup_vs_diffusers"] = base_ms / row["median_ms"] if base_ms else None
    return rows


# ------------------------------------------------------------------------------ report


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("diffusers", "triton", "ringsp"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - not installed
            out[name] = None
    return out


def device_info(device):
    if device.type != "cuda":
        return {"name": platform.processor() or "cpu", "count": dist.get_world_size()}
    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1), "count": dist.get_world_size()}


def print_table(rows, seq_len, text_len):
    print(f"image tokens {seq_len}, text tokens {text_len}")
    head = f"{'impl':>10} {'u':>2} {'r':>2} {'compile':>9} {'median ms':>10} {'speedup':>8} {'rel err':>9} " \
           f"{'peak GiB':>8}"
    print(head + "\n" + "-" * len(head))
    for row in rows:
        lead = f"{row['impl']:>10} {row['ulysses']:>2} {row['ring']:>2} {row['compile'] or 'eager':>9}"
        if "error" in row:
            print(f"{lead}  ERROR {row['error'][:90]}")
            continue
        speed = f"{row['speedup_vs_diffusers']:.2f}x" if row.get("speedup_vs_diffusers") else "-"
        err = f"{row['max_rel_err']:.1e}" if row.get("max_rel_err") is not None else "-"
        print(f"{lead} {row['median_ms']:>10.1f} {speed:>8} {err:>9} {row['peak_mem_gib']:>8.2f}")


def write_json(path, payload):
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")


def main(argv=None):
    args = parse_args(argv)
    family = family_of(args.model)
    size = pixel_size(args, family)
    text_len = FAMILIES[family][2] if args.text_len is None else args.text_len
    launcher = ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", "?"), "-m"] \
        if "TORCHELASTIC_RUN_ID" in os.environ else [os.path.basename(sys.executable), "-m"]
    command = " ".join(launcher + ["ringsp_bench.dit_forward"] + sys.argv[1:])
    base = {"benchmark": "dit_forward", "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": args.model, "dtype": args.dtype, "size": list(size), "text_len": text_len,
            "text_valid": args.text_valid}
    if args.device == "cuda" and not torch.cuda.is_available():
        print("dit_forward: CUDA is not available; nothing measured (use --device cpu to check the script)")
        if args.json and int(os.environ.get("RANK", 0)) == 0:
            write_json(args.json, {**base, "versions": versions(), "skipped": "CUDA not available"})
        return 0
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    device = init_distributed(args.device)
    try:
        model, cfg = build_transformer(args.model, family, args.layers, dtype, device, args.seed)
        inputs, seq_len = make_inputs(family, cfg, size, text_len, args.text_valid, dtype, device, args.seed)
        rows = run_rows(model, inputs, args, device)
        if dist.get_rank() == 0:
            print_table(rows, seq_len, text_len)
            if args.json:
                write_json(args.json, {**base, "world_size": dist.get_world_size(), "device": device_info(device),
                                       "versions": versions(), "config": cfg, "seq_len": seq_len,
                                       "attention_backend": "diffusers' default (none set)", "iters": args.iters,
                                       "warmup": args.warmup, "compile": args.compile, "results": rows})
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
