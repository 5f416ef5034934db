"""Wan transformer forward under sequence parallelism: ringsp vs diffusers' context parallel vs 1 GPU.

    torchrun --nproc_per_node 1 -m ringsp_bench.wan_forward --json wan_fwd_w1.json
    torchrun --nproc_per_node 2 -m ringsp_bench.wan_forward --json wan_fwd_w2.json
    torchrun --nproc_per_node 4 -m ringsp_bench.wan_forward --json wan_fwd_w4.json
    ... --model wan2.1-t2v-14b    (default wan2.1-t2v-1.3b; published config, random bf16 weights)

One run per world size W. In each run, on the same model and inputs (B=1, text 512 x 4096):
  diffusers-1gpu  diffusers' own forward on rank 0 alone (the others wait): the baseline
  ringsp          ringsp.enable_sequence_parallel for every (ulysses, ring) with u*r = W
  diffusers-cp    diffusers' ContextParallelConfig(ulysses_degree=u, ring_degree=r) through
                  transformer.enable_parallelism, on a clone sharing the weights
diffusers' attention backend is cuDNN where it runs (else flash, else native); diffusers makes
it process-wide, so the baseline, diffusers-cp and ringsp's (local) cross-attention share it.
Shapes: 480p/81f (latents 21x60x104, S=32760) and 720p/81f (21x90x160, S=75600).
Each forward is timed with CUDA events after --warmup untimed ones; an iteration's time is
the slowest rank's; the table shows the median, the speedup over diffusers-1gpu, the max
abs error against diffusers-1gpu's output (relative to its max abs value), the mean abs error
(relative to its mean abs value) and the peak memory of the busiest rank. --json writes all of
it with device, versions, date, command.

--compile [regional|full] times every row compiled too (ringsp and both diffusers columns
compiled the same way, by ringsp.models.compile_transformer: regional = diffusers'
compile_repeated_blocks(fullgraph=True); static shapes); --cuda-graphs adds rows with piecewise
CUDA graphs (ringsp.models.compile: the SP attention outside the graphs); --skip-eager drops
the eager rows. A compiled row has compile_s (the first forward(s), which compile and record,
untimed otherwise) and speedup_vs_eager (over the eager row of the same impl and split).

--attention-precision native,int8,fp8 gives one ringsp row per precision and split (8-bit SP
attention inside the same model); every row's max_rel_err and mean_rel_err are its output's
deviation from diffusers-1gpu's forward in --dtype (same weights, same seed and inputs).

Without CUDA it prints why and exits 0 (writing a JSON that says so). `--device cpu` with
a tiny model (e.g. `--model tiny-t2v --latent 3,6,10 --text-len 8`) runs the whole script
on gloo, which checks the script, not the speed.
"""
import argparse
import copy
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.distributed as dist

RESOLUTIONS = {"480p": (21, 60, 104), "720p": (21, 90, 160)}  # latent F, H, W for 81 frames
BACKEND_PREFERENCE = ("_native_cudnn", "flash", "native")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="wan2.1-t2v-1.3b", help="a config name of ringsp.models.configs")
    p.add_argument("--resolutions", default="480p,720p", help=f"comma list of {sorted(RESOLUTIONS)}")
    p.add_argument("--latent", action="append", default=[], metavar="F,H,W",
                   help="a custom latent size (repeatable); replaces --resolutions")
    p.add_argument("--text-len", type=int, default=512)
    add_run_args(p)
    return check_run_args(p, p.parse_args(argv))


def add_run_args(p):
    """The arguments every transformer-forward bench shares (this one and qwen_forward.py)."""
    p.add_argument("--layers", type=int, default=None, help="override num_layers (quick runs)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--splits", default=None, help="comma list of UxR to run (default: every u*r = world)")
    p.add_argument("--skip-single", action="store_true", help="skip the diffusers-1gpu baseline")
    p.add_argument("--skip-diffusers-cp", action="store_true")
    p.add_argument("--compile", nargs="?", const="regional", choices=("regional", "full"), default=None,
                   help="also time every row compiled (regional: compile_repeated_blocks, the default MODE)")
    p.add_argument("--cuda-graphs", action="store_true", help="also time rows with piecewise CUDA graphs")
    p.add_argument("--skip-eager", action="store_true", help="time the compiled rows only")
    p.add_argument("--attention-precision", type=_precisions, default=[None], metavar="P[,P...]",
                   help="ringsp rows, one per precision and split: native (the activations' dtype; or "
                        "'bf16'), int8, fp8 -- e.g. native,int8,fp8; the diffusers rows stay in --dtype")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)


def _precisions(text):
    """'native,int8,fp8' -> [None, 'int8', 'fp8'] (None: the SP attention in the activations' dtype)."""
    names = {"native": None, "bf16": None, "int8": "int8", "fp8": "fp8"}
    got = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in got if x not in names]
    if bad or not got:
        raise argparse.ArgumentTypeError(f"takes a comma list of {', '.join(names)}; got {text!r}")
    return list(dict.fromkeys(names[x] for x in got))


def check_run_args(p, args):
    if args.iters < 1 or args.warmup < 0 or args.text_len < 1:
        p.error("--iters must be >= 1, --warmup >= 0, --text-len >= 1")
    if args.skip_eager and not (args.compile or args.cuda_graphs):
        p.error("--skip-eager leaves nothing to time without --compile or --cuda-graphs")
    if args.cuda_graphs and args.device != "cuda":
        p.error("--cuda-graphs needs --device cuda")
    return args


EAGER = (None, False)


def variants(args):
    """(compile mode or None, CUDA graphs) of every row kind to time, eager first."""
    mode = args.compile or "regional"
    out = [] if args.skip_eager else [EAGER]
    if args.compile:
        out.append((mode, False))
    if args.cuda_graphs:
        out.append((mode, True))
    return out


# ------------------------------------------------------------------------------ set-up


def init_distributed(device_type):
    """Initialises the default group (a world of 1 when not launched by torchrun)."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600),
                            **({"device_id": device} if device_type == "cuda" else {}))
    return device


def build_model(model_cls, cfg, dtype, device, seed):
    """A diffusers transformer from `cfg` with random weights, built in place on the device in
    the target dtype (a 14B model never exists in fp32), equal on all ranks."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_cls.from_config(cfg)
    finally:
        torch.set_default_dtype(previous)
    keep_fp32 = getattr(model, "_keep_in_fp32_modules", None) or []
    for pname, param in model.named_parameters():
        if any(part in keep_fp32 for part in pname.split(".")):  # as from_pretrained(torch_dtype=) does
            param.data = param.data.float()
        dist.broadcast(param.data, src=0)
    return model.eval()


def build_transformer(name, layers, dtype, device, seed):
    """The published config with random weights."""
    from diffusers import WanTransformer3DModel

    from ringsp.models import configs

    cfg = configs.transformer_config(name)
    if layers is not None:
        cfg["num_layers"] = layers
    return build_model(WanTransformer3DModel, cfg, dtype, device, seed), cfg


def make_inputs(cfg, latent, text_len, expand_timesteps, dtype, device, seed):
    from ringsp.models.wan import wan_token_count

    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    frames, height, width = latent
    latents = torch.randn(1, cfg["in_channels"], frames, height, width, generator=gen).to(device, dtype)
    text = torch.randn(1, text_len, cfg["text_dim"], generator=gen).to(device, dtype)
    seq_len = wan_token_count(latent, cfg["patch_size"])
    timestep = torch.full((1, seq_len) if expand_timesteps else (1,), 500.0, device=device)
    return {"hidden_states": latents, "timestep": timestep, "encoder_hidden_states": text,
            "return_dict": False}, seq_len


def shallow_clone(model):
    """A second module tree sharing every parameter and buffer (diffusers CP cannot be undone)."""
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return copy.deepcopy(model, memo)


def pick_backend(model, device, dtype, mask=None, preference=BACKEND_PREFERENCE):
    """Sets diffusers' attention backend, the first of `preference` that supports context
    parallel and runs here (with `mask`, if the model will pass one). diffusers makes it the
    process-wide active backend, so the baseline, diffusers-cp and ringsp's cross-attention
    all use it."""
    from diffusers.models.attention_dispatch import (
        AttentionBackendName, _AttentionBackendRegistry, dispatch_attention_fn,
    )

    probe = torch.randn(1, 128, 2, 64, device=device, dtype=dtype)
    for name in preference:
        backend = AttentionBackendName(name)
        if not _AttentionBackendRegistry._is_context_parallel_available(backend):
            continue
        try:
            dispatch_attention_fn(probe, probe, probe, attn_mask=mask, backend=backend)
            model.set_attention_backend(name)
            return name
        except Exception:  # noqa: BLE001 - backend missing or unusable on this device: try the next
            continue
    return None


# ------------------------------------------------------------------------------ timing


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model, inputs, iters, warmup, device, collective=True):
    """(per-iteration ms of the slowest rank, last output, peak memory GiB of the busiest rank).
    collective=False times this rank alone (no barriers, no reductions)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            if collective:
                dist.barrier()
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = model(**inputs)[0]
                end.record()
                end.synchronize()
                ms = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                out = model(**inputs)[0]
                ms = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                times.append(ms)
    # on the compute device: NCCL reduces no CPU tensors
    slowest = torch.tensor(times, dtype=torch.float64, device=device)
    if collective:
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0],
                        device=device)
    if collective:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    return slowest.tolist(), out, float(peak.item())


def first_forwards(model, inputs, count, device, collective):
    """Seconds of the first `count` forwards of a freshly compiled model (compiling, and for
    CUDA graphs recording), the slowest rank's."""
    if collective:
        dist.barrier()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(count):
            model(**inputs)
    _sync(device)
    seconds = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
    if collective:
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    return float(seconds.item())


def time_variant(model, inputs, args, device, variant, collective=True):
    """time_forward of the model eager, or compiled as `variant` says (then compile_s too):
    (times, out, peak, compile_s). The model is eager again afterwards."""
    mode, cuda_graphs = variant
    if mode is None:
        return (*time_forward(model, inputs, args.iters, args.warmup, device, collective), None)
    from ringsp.models import compile_transformer, uncompile_transformer
    from ringsp.models.compile import CUDA_GRAPH_WARMUP_FORWARDS

    torch._dynamo.reset()  # each variant compiles from scratch: compile_s is the whole cost
    compile_transformer(model, mode, cuda_graphs, dynamic=False)
    try:
        compile_s = first_forwards(model, inputs, CUDA_GRAPH_WARMUP_FORWARDS if cuda_graphs else 1, device,
                                   collective)
        return (*time_forward(model, inputs, args.iters, args.warmup, device, collective), compile_s)
    finally:
        uncompile_transformer(model)


def _with_variant(row, variant):
    row.update(compile=variant[0], cuda_graphs=variant[1])
    return row


def rel_error(out, ref):
    if ref is None or out is None:
        return None
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


def mean_rel_error(out, ref):
    """Mean absolute deviation over the mean absolute value of the reference."""
    if ref is None or out is None:
        return None
    return float((out.float() - ref.float()).abs().mean() / ref.float().abs().mean().clamp_min(1e-12))


def errors(out, ref):
    return {"max_rel_err": rel_error(out, ref), "mean_rel_err": mean_rel_error(out, ref)}


# ------------------------------------------------------------------------------ runs


def factor_pairs(world):
    return [(u, world // u) for u in range(world, 0, -1) if world % u == 0]


def run_single(model, inputs, args, device, variant=EAGER):
    """diffusers' plain forward on rank 0 only; the other ranks wait."""
    row = {"impl": "diffusers-1gpu", "ulysses": 1, "ring": 1}
    ref = None
    if dist.get_rank() == 0:
        try:
            times, ref, peak, compile_s = time_variant(model, inputs, args, device, variant, collective=False)
            row.update(times_ms=times, peak_mem_gib=peak, compile_s=compile_s)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            row["error"] = f"{type(exc).__name__}: {exc}"
    dist.barrier()
    return _with_variant(row, variant), ref


_contexts = {}


def run_ringsp(model, inputs, split, device, args, ref, variant=EAGER, precision=None):
    import ringsp
    from ringsp.parallel import ParallelConfig, init_parallel

    u, r = split
    row = {"impl": "ringsp", "ulysses": u, "ring": r, "attention_precision": precision}
    try:
        if split not in _contexts:  # one set of process groups per split, reused across shapes
            _contexts[split] = init_parallel(ParallelConfig(ulysses_degree=u, ring_degree=r))
        ctx = _contexts[split]
        ringsp.enable_sequence_parallel(model, ctx, attention_precision=precision)
        try:
            times, out, peak, compile_s = time_variant(model, inputs, args, device, variant)
        finally:
            ringsp.disable_sequence_parallel(model)
        row.update(times_ms=times, peak_mem_gib=peak, **errors(out, ref), compile_s=compile_s)
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"{type(exc).__name__}: {exc}"
    return _with_variant(row, variant)


def run_diffusers_cp(model, inputs, split, device, args, ref, variant=EAGER):
    u, r = split
    row = {"impl": "diffusers-cp", "ulysses": u, "ring": r}
    clone = None
    try:
        from diffusers import ContextParallelConfig

        if device.type != "cuda":
            raise RuntimeError("diffusers' context parallel needs an accelerator")
        clone = shallow_clone(model)
        clone.enable_parallelism(config=ContextParallelConfig(ring_degree=r, ulysses_degree=u))
        times, out, peak, compile_s = time_variant(clone, inputs, args, device, variant)
        row.update(times_ms=times, peak_mem_gib=peak, **errors(out, ref), compile_s=compile_s)
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"{type(exc).__name__}: {exc}"
    del clone
    gc.collect()  # diffusers' hooks keep the clone in reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return _with_variant(row, variant)


def finish_row(row, shape_name, latent, seq_len, base_ms):
    row.update(shape=shape_name, latent=list(latent), seq_len=seq_len)
    if "times_ms" in row:
        row["median_ms"] = statistics.median(row["times_ms"])
        row["min_ms"] = min(row["times_ms"])
        row["speedup_vs_1gpu"] = base_ms / row["median_ms"] if base_ms else None
    return row


def run_shape(model, cfg, shape_name, latent, args, device, dtype, expand):
    inputs, seq_len = make_inputs(cfg, latent, args.text_len, expand, dtype, device, args.seed)
    return run_rows(model, inputs, args, device, lambda row, base_ms: finish_row(row, shape_name, latent, seq_len,
                                                                                base_ms))


def run_rows(model, inputs, args, device, finish):
    """Every row of one shape: per variant (eager first), diffusers-1gpu, then ringsp and
    diffusers-cp per split. finish(row, base_ms) adds the shape's fields."""
    rows, ref, base_ms = [], None, None
    for variant in variants(args):
        if not args.skip_single:
            row, out = run_single(model, inputs, args, device, variant)
            holder = [row]
            dist.broadcast_object_list(holder, src=0)  # every rank learns the baseline time
            row = holder[0]
            if variant == EAGER:  # the baseline: diffusers eager on one GPU
                ref, base_ms = out, (statistics.median(row["times_ms"]) if "times_ms" in row else None)
            rows.append(finish(row, base_ms))
        for split in selected_splits(args):
            for precision in args.attention_precision:
                rows.append(finish(run_ringsp(model, inputs, split, device, args, ref, variant, precision), base_ms))
            if not args.skip_diffusers_cp and split != (1, 1):  # diffusers refuses u = r = 1
                rows.append(finish(run_diffusers_cp(model, inputs, split, device, args, ref, variant), base_ms))
    return add_compile_speedups(rows)


def add_compile_speedups(rows):
    """speedup_vs_eager on each compiled row: the eager median of its impl, split and attention
    precision over its own."""
    twin = lambda r: (r["impl"], r["ulysses"], r["ring"], r.get("attention_precision"))  # noqa: E731
    eager = {twin(r): r.get("median_ms") for r in rows if r.get("compile") is None}
    for row in rows:
        base = eager.get(twin(row))
        if row.get("compile") is not None and base and row.get("median_ms"):
            row["speedup_vs_eager"] = base / row["median_ms"]
    return rows


def selected_splits(args):
    pairs = factor_pairs(dist.get_world_size())
    if args.splits is None:
        return pairs
    wanted = [tuple(int(x) for x in s.lower().split("x")) for s in args.splits.split(",")]
    bad = [w for w in wanted if w not in pairs]
    if bad:
        raise SystemExit(f"--splits {bad} do not multiply to the world size {dist.get_world_size()}")
    return wanted


def shapes(args):
    if args.latent:
        return [(f"latent{s}", tuple(int(x) for x in s.split(","))) for s in args.latent]
    names = [n.strip() for n in args.resolutions.split(",") if n.strip()]
    unknown = [n for n in names if n not in RESOLUTIONS]
    if unknown:
        raise SystemExit(f"unknown --resolutions {unknown}; known: {sorted(RESOLUTIONS)}")
    return [(n, RESOLUTIONS[n]) for n in names]


# ------------------------------------------------------------------------------ report


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for mod in ("diffusers", "triton", "ringsp"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    if torch.cuda.is_available():
        out["cudnn"] = torch.backends.cudnn.version()
        out["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    return out


def device_info(device):
    if device.type != "cuda":
        return {"name": platform.processor() or "cpu", "count": dist.get_world_size()}
    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count()}


def variant_label(row):
    if row.get("compile") is None:
        return "eager"
    return row["compile"] + ("+graphs" if row.get("cuda_graphs") else "")


def print_table(rows):
    head = f"{'shape':>10} {'S':>6} {'impl':>15} {'u':>2} {'r':>2} {'compile':>15} {'median ms':>10} " \
           f"{'speedup':>8} {'vs eager':>8} {'rel err':>9} {'mean err':>9} {'peak GiB':>8} {'compile s':>9}"
    print(head)
    print("-" * len(head))
    for row in rows:
        impl = row["impl"] + (f"[{row['attention_precision']}]" if row.get("attention_precision") else "")
        lead = f"{row['shape']:>10} {row['seq_len']:>6} {impl:>15} {row['ulysses']:>2} {row['ring']:>2} " \
               f"{variant_label(row):>15}"
        if "error" in row:
            print(f"{lead}  ERROR {row['error'][:80]}")
            continue
        speed = f"{row['speedup_vs_1gpu']:.2f}x" if row.get("speedup_vs_1gpu") else "-"
        vs_eager = f"{row['speedup_vs_eager']:.2f}x" if row.get("speedup_vs_eager") else "-"
        err, mean = (f"{row[k]:.1e}" if row.get(k) is not None else "-" for k in ("max_rel_err", "mean_rel_err"))
        compile_s = f"{row['compile_s']:.1f}" if row.get("compile_s") is not None else "-"
        print(f"{lead} {row['median_ms']:>10.1f} {speed:>8} {vs_eager:>8} {err:>9} {mean:>9} "
              f"{row['peak_mem_gib']:>8.2f} {compile_s:>9}")


def run_record(base, args, device, cfg, backend, rows, **extra):
    """The JSON record of one forward benchmark run (wan_forward, qwen_forward, dit_forward)."""
    import torch.distributed as dist

    return {**base, "world_size": dist.get_world_size(), "device": device_info(device), "versions": versions(),
            "config": cfg, "attention_backend": backend, "iters": args.iters, "warmup": args.warmup,
            "compile": args.compile, "cuda_graphs": args.cuda_graphs, **extra, "results": rows}


def write_json(path, payload):
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")


def main(argv=None):
    args = parse_args(argv)
    launcher = [sys.executable]
    if "TORCHELASTIC_RUN_ID" in os.environ:
        launcher = ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", "?")]
    base = {"benchmark": "wan_forward", "command": " ".join(launcher + sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": args.model, "dtype": args.dtype}
    if args.device == "cuda" and not torch.cuda.is_available():
        print("wan_forward: CUDA is not available; nothing measured (use --device cpu to check the script)")
        if args.json and int(os.environ.get("RANK", 0)) == 0:
            write_json(args.json, {**base, "versions": versions(), "skipped": "CUDA not available"})
        return 0
    try:
        import diffusers  # noqa: F401

        import ringsp  # noqa: F401
    except ImportError as exc:
        print(f"wan_forward: needs diffusers and ringsp ({exc})")
        return 1
    from ringsp.models import configs

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    device = init_distributed(args.device)
    try:
        model, cfg = build_transformer(args.model, args.layers, dtype, device, args.seed)
        backend = pick_backend(model, device, dtype)
        expand = args.model in configs.MODELS and configs.model_spec(args.model)["expand_timesteps"]
        rows = []
        for shape_name, latent in shapes(args):
            rows.extend(run_shape(model, cfg, shape_name, latent, args, device, dtype, expand))
        if dist.get_rank() == 0:
            print_table(rows)
            if args.json:
                write_json(args.json, run_record(base, args, device, cfg, backend, rows, text_len=args.text_len))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
