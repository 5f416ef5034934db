"""Host time of one Qwen-Image transformer forward under SP, per layer.

    python -m ringsp_bench.host_time --json host_cpu.json                  # CPU, gloo, 1 and 2 processes
    python -m ringsp_bench.host_time --device cuda --model qwen-image --json host_cuda.json   # one GPU

The image is kept small (default 16 x 16 tokens) so that the device does almost nothing and
a forward's wall time IS the host's time to issue it: what Python, diffusers' block code, the
SP hooks, the argument checks, the agreement and the attention launches cost per layer.
That cost is what decides whether a layer's GPU work can hide it at N GPUs (a Qwen-Image
1024² layer has about 1.7 ms of GPU work at N=2). Rows: diffusers' own forward (no SP, the
floor of the block code itself) and ringsp under SP for each (ulysses, ring) split of 1 and
2 processes (CPU) or of the one GPU (CUDA: u1r1 only). On CPU the default model is the tiny
Qwen config deepened to the real 60 layers; on CUDA the published config at its real width.
"""
import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from . import wan_forward as wf  # builds a model with random weights in place on the device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default=None, help="Qwen config name (default: tiny-qwen on CPU, qwen-image on CUDA)")
    p.add_argument("--layers", type=int, default=60)
    p.add_argument("--grid", default="16,16", help="image token grid H,W")
    p.add_argument("--text-len", type=int, default=64)
    p.add_argument("--text-valid", type=int, default=48, help="valid text tokens (mask); = text-len for none")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--worlds", default="1,2", help="CPU: process counts to run")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.model = args.model or ("tiny-qwen" if args.device == "cpu" else "qwen-image")
    args.grid = tuple(int(x) for x in args.grid.split(","))
    return args


def build(args, device, dtype):
    from diffusers import QwenImageTransformer2DModel

    from ringsp.models import configs

    cfg = dict(configs.transformer_config(args.model), num_layers=args.layers)
    model = wf.build_model(QwenImageTransformer2DModel, cfg, dtype, device, seed=0)  # built on the device
    gen = torch.Generator().manual_seed(1)
    S = args.grid[0] * args.grid[1]
    mask = (torch.arange(args.text_len) < args.text_valid).long()[None].to(device)
    inputs = dict(
        hidden_states=torch.randn(1, S, cfg["in_channels"], generator=gen).to(device, dtype),
        encoder_hidden_states=torch.randn(1, args.text_len, cfg["joint_attention_dim"], generator=gen).to(device, dtype),
        encoder_hidden_states_mask=mask if args.text_valid < args.text_len else None,
        timestep=torch.full((1,), 0.5, device=device), img_shapes=[[(1, *args.grid)]], return_dict=False)
    return model, inputs


def time_forward(model, inputs, args, device):
    """Median wall ms of one forward; the device is synchronised before and after each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(args.warmup + args.iters):
            if dist.is_initialized():
                dist.barrier()
            sync()
            t = time.perf_counter()
            model(**inputs)
            sync()
            if i >= args.warmup:
                times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def splits(world):
    return [(u, world // u) for u in range(1, world + 1) if world % u == 0]


def measure(rank, world, args, port):
    """This rank's rows (every split of `world`); rank 0's are reported."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    if args.device == "cpu":
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo", device_id=device if args.device == "cuda" else None)
    import ringsp

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model, inputs = build(args, device, dtype)
    rows = []
    if world == 1:
        rows.append(dict(impl="diffusers (no SP)", world=1, ms=time_forward(model, inputs, args, device)))
    for u, r in splits(world):
        ctx = ringsp.init_parallel(ringsp.ParallelConfig(ulysses_degree=u, ring_degree=r))
        ringsp.enable_sequence_parallel(model, ctx)
        ms = time_forward(model, inputs, args, device)
        ringsp.disable_sequence_parallel(model)
        rows.append(dict(impl=f"ringsp u{u}r{r}", world=world, ms=ms))
    for row in rows:
        row["ms_per_layer"] = row["ms"] / args.layers
    dist.destroy_process_group()
    return rows


def _spawned(rank, world, args, port, queue):
    rows = measure(rank, world, args, port)
    if rank == 0:
        queue.put(rows)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_world(world, args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_spawned, args=(r, world, args, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    rows = queue.get(timeout=1800)
    for p in procs:
        p.join(timeout=60)
    if any(p.exitcode for p in procs):
        raise SystemExit(f"host_time: a process of world {world} failed")
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("host_time: --device cuda needs a GPU", file=sys.stderr)
        return 2
    rows = []
    if args.device == "cuda":
        rows = measure(0, 1, args, _free_port())
    else:
        for world in (int(w) for w in args.worlds.split(",")):
            rows.extend(_run_world(world, args))
    base = rows[0]["ms_per_layer"]
    print(f"{'impl':<20} {'world':>5} {'ms/forward':>11} {'ms/layer':>9} {'vs diffusers':>13}")
    for row in rows:
        row["vs_diffusers_per_layer"] = row["ms_per_layer"] / base
        print(f"{row['impl']:<20} {row['world']:>5} {row['ms']:>11.2f} {row['ms_per_layer']:>9.3f} "
              f"{row['vs_diffusers_per_layer']:>12.2f}x")
    if args.json:
        report = dict(benchmark="host_time", device=(torch.cuda.get_device_name(0) if args.device == "cuda"
                                                       else platform.processor() or platform.machine()),
                      cpu_count=os.cpu_count(), torch=torch.__version__, python=platform.python_version(),
                      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      command="python " + " ".join(sys.argv),
                      config=dict(model=args.model, layers=args.layers, grid=args.grid, text_len=args.text_len,
                                  text_valid=args.text_valid, iters=args.iters, warmup=args.warmup),
                      results=rows)
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
