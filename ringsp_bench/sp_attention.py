"""SP attention benchmark: ringsp ring / Ulysses / USP vs diffusers' context-parallel
attention (cuDNN backend) vs single-GPU attn_fwd. One launch per world size:

    torchrun --nproc-per-node N -m ringsp_bench.sp_attention --json OUT.json [--seq 32760 75600]

B=1, H=12, D=128, bf16 by default. For each sequence length and every u x r = N layout it
reports the time per call (the slowest rank's median of CUDA-event timings after warm-up),
the efficiency T1 / (N * TN) against one GPU running attn_fwd over the whole sequence,
the error of this rank's shard against that single-GPU output, and for layouts with a ring
"comm hidden": the share of the ring's transfer time that overlaps compute, from runs with
the transfers skipped (compute only) and with the compute skipped (transfers only):
    hidden = (T_compute_only + T_transfers_only - T_full) / T_transfers_only, clipped to [0, 1].
The measured times are also what to calibrate ringsp/parallel/cost_model.py with.
"""
import argparse
import datetime
import json
import os
import statistics
import sys

import torch
import torch.distributed as dist

DEFAULT_SEQS = (32760, 75600)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the results here (rank 0)")
    p.add_argument("--seq", type=int, nargs="+", default=list(DEFAULT_SEQS), help="global sequence lengths")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--no-diffusers", action="store_true", help="skip the diffusers column")
    args = p.parse_args(argv)
    for name in ("heads", "head_dim", "batch", "warmup", "iters"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive")
    if any(s < 1 for s in args.seq):
        p.error("--seq values must be positive")
    return args


def layouts(world):
    """(name, ulysses, ring) of every SP layout of `world` ranks."""
    if world == 1:
        return [("single", 1, 1)]
    out = [("ring", 1, world), ("ulysses", world, 1)]
    out += [("usp", u, world // u) for u in range(2, world) if world % u == 0]
    return out


def efficiency(t1, world, tn):
    return None if not t1 or not tn else t1 / (world * tn)


def comm_hidden(t_full, t_compute_only, t_transfers_only):
    if not t_transfers_only or t_compute_only is None or t_full is None:
        return None
    return min(1.0, max(0.0, (t_compute_only + t_transfers_only - t_full) / t_transfers_only))


def format_table(rows):
    def cell(value, spec, width):
        return "-".rjust(width) if value is None else format(value, f"{width}{spec}")

    head = f"{'S':>7} {'impl':<16} {'layout':<7} {'ms':>9} {'eff':>6} {'hidden':>7} {'max err':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['seq_len']:>7} {r['impl']:<16} {r['layout']:<7} {cell(r['time_ms'], '.3f', 9)} "
                     f"{cell(r['efficiency'], '.2f', 6)} {cell(r['comm_hidden'], '.2f', 7)} "
                     f"{cell(r['max_abs_err'], '.2e', 9)}")
    return "\n".join(lines)


def versions():
    out = {"torch": torch.__version__}
    for name in ("triton", "diffusers"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing package is reported as null
            out[name] = None
    return out


# ----------------------------------------------------------------------------- GPU side


def time_ms(fn, warmup, iters):
    """The slowest rank's median CUDA-event time of fn, in ms."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    dist.barrier()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    median = torch.tensor([statistics.median(s.elapsed_time(e) for s, e in events)], device="cuda")
    dist.all_reduce(median, op=dist.ReduceOp.MAX)
    return median.item()


def max_err(out_local, ref_full, rank, world):
    local = out_local.shape[1]
    ref = ref_full[:, rank * local:(rank + 1) * local]
    err = (out_local[:, :ref.shape[1]].float() - ref.float()).abs().max()
    dist.all_reduce(err, op=dist.ReduceOp.MAX)
    return err.item()


def diffusers_attention(u, r, device):
    """A callable(q, k, v) running diffusers' context-parallel attention with the cuDNN
    backend on a (ring=r, ulysses=u) mesh, or (None, reason) when it cannot."""
    try:
        from diffusers.models._modeling_parallel import ContextParallelConfig
        from diffusers.models._modeling_parallel import ParallelConfig as DiffusersParallelConfig
        from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn
        from torch.distributed.device_mesh import init_device_mesh
    except Exception as exc:  # noqa: BLE001
        return None, f"diffusers context parallel not importable: {type(exc).__name__}: {exc}"
    mesh = init_device_mesh("cuda", (r, u), mesh_dim_names=("ring", "ulysses"))
    config = DiffusersParallelConfig(context_parallel_config=ContextParallelConfig(ring_degree=r, ulysses_degree=u))
    config.setup(dist.get_rank(), dist.get_world_size(), device, mesh=mesh)
    backend = AttentionBackendName._NATIVE_CUDNN
    return (lambda q, k, v: dispatch_attention_fn(q, k, v, backend=backend, parallel_config=config)), None


def one_phase_loops():
    """RingLoop variants that run one phase of a ring step (their results are WRONG, only
    their time counts): compute only (every step attends to the rank's own block, nothing is
    exchanged) and transfers only (the exchange alone, no attention)."""
    from ringsp.parallel.ring import RingLoop

    class ComputeOnly(RingLoop):
        def begin(self, step):
            self._handle = None

    class TransfersOnly(RingLoop):
        def attend(self, step):
            pass

    return ComputeOnly, TransfersOnly


def sp_pass_with(loop_class, a, ulysses_group, ring_group):
    """ringsp's Ulysses-inside, ring-across pass (no joint tokens) with its ring loop replaced
    by `loop_class`."""
    from ringsp.parallel.comm import ring_exchange
    from ringsp.parallel.groups import size_rank
    from ringsp.parallel.ulysses import heads_to_seq, seq_to_heads

    u, _ = size_rank(ulysses_group)
    q, k, v = (a.q, a.k, a.v) if u == 1 else seq_to_heads(a.q, a.k, a.v, ulysses_group)
    size, rank = size_rank(ring_group)
    kv = torch.stack((k, v)).contiguous()
    out = loop_class(q, kv, size, rank, a.seq_len, a.scale, ring_exchange(ring_group, q.device), a.precision).run()
    return out if u == 1 else heads_to_seq(out, ulysses_group, a.q.shape[2])


def bench_seq(S, args, world, rank, device, dtype, notes):
    import ringsp_kernels as rk
    from ringsp.parallel import ParallelConfig, init_parallel, shard_sequence, usp_attention
    from ringsp.parallel.attention_args import prepare

    B, H, D = args.batch, args.heads, args.head_dim
    gen = torch.Generator(device=device).manual_seed(1234 + S)
    q, k, v = (torch.randn(B, S, H, D, device=device, dtype=dtype, generator=gen) for _ in range(3))
    ref, _ = rk.attn_fwd(q, k, v)
    t1 = time_ms(lambda: rk.attn_fwd(q, k, v), args.warmup, args.iters)  # every rank: one GPU each
    rows = [dict(seq_len=S, impl="attn_fwd (1 GPU)", layout="1x1", ulysses=1, ring=1, time_ms=t1,
                 efficiency=None, comm_hidden=None, max_abs_err=None)]
    for name, u, r in layouts(world):
        ctx = init_parallel(ParallelConfig(u, r))
        local = [shard_sequence(t, ctx) for t in (q, k, v)]
        call = lambda: usp_attention(*local, ctx, seq_len=S)  # noqa: E731
        err = max_err(call(), ref, ctx.sp_rank, world)
        tn = time_ms(call, args.warmup, args.iters)
        row = dict(seq_len=S, impl=f"ringsp {name}", layout=f"{u}x{r}", ulysses=u, ring=r, time_ms=tn,
                   efficiency=efficiency(t1, world, tn), comm_hidden=None, max_abs_err=err)
        if r > 1:  # the same pass, one phase of its ring at a time
            a = prepare("usp_attention", ctx.sp_group, ctx.sp_degree, *local, S, None, None, None, None, None)
            for key, loop in zip(("time_compute_only_ms", "time_transfers_only_ms"), one_phase_loops()):
                row[key] = time_ms(lambda: sp_pass_with(loop, a, ctx.ulysses_group, ctx.ring_group),  # noqa: B023
                                   args.warmup, args.iters)
            row["comm_hidden"] = comm_hidden(tn, row["time_compute_only_ms"], row["time_transfers_only_ms"])
        rows.append(row)
        if world > 1 and not args.no_diffusers:
            rows.extend(bench_diffusers(S, u, r, local, ref, t1, args, world, device, notes))
    return rows


def bench_diffusers(S, u, r, local, ref, t1, args, world, device, notes):
    fn, reason = diffusers_attention(u, r, device)
    if fn is None:
        if reason not in notes:
            notes.append(reason)
        return []
    try:
        with torch.no_grad():
            err = max_err(fn(*local), ref, dist.get_rank(), world)
            tn = time_ms(lambda: fn(*local), args.warmup, args.iters)
    except Exception as exc:  # noqa: BLE001 - one failing layout should not end the run
        notes.append(f"diffusers {u}x{r} S={S} failed: {type(exc).__name__}: {exc}")
        return []
    return [dict(seq_len=S, impl="diffusers cudnn", layout=f"{u}x{r}", ulysses=u, ring=r, time_ms=tn,
                 efficiency=efficiency(t1, world, tn), comm_hidden=None, max_abs_err=err)]


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("sp_attention: needs CUDA GPUs (launch with torchrun on a GPU machine)", file=sys.stderr)
        return 2
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        if "RANK" not in os.environ:  # plain `python -m ringsp_bench.sp_attention`: a world of one
            os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
        dist.init_process_group("nccl", device_id=device)
    world, rank = dist.get_world_size(), dist.get_rank()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    notes, rows = [], []
    with torch.no_grad():
        for S in args.seq:
            if S % world:
                notes.append(f"S={S} is not divisible by {world}: ringsp pads; diffusers may refuse")
            rows.extend(bench_seq(S, args, world, rank, device, dtype, notes))
    if rank == 0:
        print(format_table(rows))
        for note in notes:
            print("note:", note)
        if args.json:
            report = dict(
                benchmark="sp_attention", device=torch.cuda.get_device_name(device), world_size=world,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=f"torchrun --nproc-per-node {world} " + " ".join(sys.argv), **versions(),
                shape=dict(batch=args.batch, heads=args.heads, head_dim=args.head_dim, dtype=args.dtype),
                warmup=args.warmup, iters=args.iters, results=rows, notes=notes,
            )
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
