"""Starting the ranks of a `ringsp generate` run and finishing it on the driver.

Three ways to run, picked from the request:
- under torchrun (RANK / WORLD_SIZE in the environment): this process is one rank;
  rank 0 finishes (tables, JSON, --compare-single);
- one GPU / one process: everything here, no process group;
- otherwise: `num_gpus` worker processes are spawned (one per GPU or NPU, gloo processes on
  CPU) on a free local port; rank 0 hands its outcome back through a file and this process
  finishes. A rank that fails ends the run within seconds: ringsp.cli.supervise names it
  and stops the others.

A collective that waits longer than --timeout seconds (the process group's timeout) ends in
an error instead of a hang.

The process group's backend follows the device: NCCL on CUDA, HCCL on Ascend NPUs, gloo on CPU.
"""
import dataclasses
import datetime
import os
import socket
import sys
import tempfile

import torch

from .devices import backend_for, device_module
from .nonfinite import describe_nonfinite
from .output import describe
from .report import format_memory_table, format_stage_table
from .supervise import run_ranks
from .worker import run_rank

# Largest max |difference| (frames in [0, 1], latents) still reported as "equal" by
# --compare-single: fp32 reorders sums (~1e-6 seen); half precision rounds each step.
COMPARE_TOL = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 5e-2}


def execute(request, out=None):
    """Runs the request; returns the process exit code (0, or 1 if --compare-single failed)."""
    out = out or sys.stdout
    if request.under_torchrun:
        return _as_torchrun_rank(request, out)
    if request.num_gpus == 1 and not request.attention_precision:  # 8-bit attention runs in ringsp's SP op
        return finish(request, run_rank(request, distributed=False, keep_tensors=request.compare_single), out)
    return finish(request, _spawn(request), out)


def _as_torchrun_rank(request, out):
    import torch.distributed as dist

    init_group(request, int(os.environ.get("LOCAL_RANK", "0")))
    try:
        outcome = run_rank(request, distributed=True, keep_tensors=request.compare_single)
        rank = dist.get_rank()
    finally:
        dist.destroy_process_group()
    return finish(request, outcome, out) if rank == 0 else 0


def init_group(request, local_rank):
    """The default process group with the device's backend (this rank's accelerator set first)."""
    import torch.distributed as dist

    backend = backend_for(request.device)
    kwargs = {}
    if request.device != "cpu":
        device_module(request.device).set_device(local_rank)  # imports torch_npu for NPUs
        if backend == "nccl":  # binds the group to the GPU at once (HCCL takes no device_id)
            kwargs["device_id"] = torch.device("cuda", local_rank)
    dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(seconds=request.timeout_s),
                            **kwargs)


def _spawn(request):
    with tempfile.TemporaryDirectory(prefix="ringsp-") as tmp:
        path = os.path.join(tmp, "rank0.pt")
        run_ranks(_spawned_rank, (request, free_port(), path), request.num_gpus)
        return torch.load(path, weights_only=False)


def _spawned_rank(local_rank, request, port, path):
    import torch.distributed as dist

    join_spawned_group(local_rank, request, port)
    try:
        outcome = run_rank(request, distributed=True, keep_tensors=request.compare_single)
        if outcome is not None:
            torch.save(outcome, path)
        dist.barrier()  # no rank tears down while a peer still works
    finally:
        dist.destroy_process_group()
    exit_spawned_rank()


def join_spawned_group(local_rank, request, port):
    """In a spawned rank: the environment torchrun would give it, its share of the CPU
    threads, and the default process group on 127.0.0.1:port."""
    n = request.num_gpus
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank), WORLD_SIZE=str(n),
                      LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(n))
    if request.device == "cpu":  # the processes share the cores: oversubscribed OpenMP spins
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    _thread_lock_for_tqdm()
    init_group(request, local_rank)


def exit_spawned_rank():
    """Ends a spawned rank whose work is done, skipping the interpreter's teardown: in CI a
    worker once aborted there ("terminate called without an active exception") after its
    work was done and saved."""
    import multiprocessing.util

    multiprocessing.util._exit_function()  # Python-level finalizers (semaphores of tqdm's locks)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _thread_lock_for_tqdm():
    """tqdm's default lock holds multiprocessing semaphores; a rank stopped by SIGTERM after a
    peer failed would leak them (a resource_tracker warning). One process: a thread lock does."""
    import threading

    from tqdm.auto import tqdm

    tqdm.set_lock(threading.RLock())


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(request, outcome, out=None):
    """On the driver: the tables and the JSON file first, then --compare-single (a comparison
    that fails or raises loses nothing: the report is rewritten with its verdict). Returns
    the exit code: 1 if the output file was not written, the result holds NaN / Inf, or the
    comparison failed."""
    out = out or sys.stdout
    report = outcome.report
    written = report.get("output", {"written": True})["written"]  # if not, the frames are kept (.npy)
    code = 0 if written and not report.get("nonfinite") else 1
    _print_report(report, request, out)
    if request.json_path:
        write_json(report, request.json_path)
        print(f"Report written to {request.json_path}", file=out)
    if request.compare_single:
        report["sp_check"] = _checked_compare(request, outcome)
        print(_describe_check(report["sp_check"], report["parallel"]["num_gpus"], request.dtype), file=out)
        if request.json_path:
            write_json(report, request.json_path)
        code = code or (0 if report["sp_check"]["equal"] else 1)
    return code


def _checked_compare(request, outcome):
    try:
        return compare_with_single(request, outcome)
    except Exception as exc:  # noqa: BLE001 - the SP result is kept and the check reported as failed
        return {"reference": "the same generation in a single process", "equal": False,
                "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}


def compare_with_single(request, outcome):
    """Runs the same generation in this one process and compares frames and latents."""
    single = dataclasses.replace(request, num_gpus=1, ulysses_degree=1, ring_degree=1, cfg_degree=1,
                                 under_torchrun=False, compare_single=False, warmup_steps=0, compile_mode=None,
                                 cuda_graphs=False, attention_precision=None)  # the reference: plain diffusers
    ref = run_rank(single, distributed=False, quiet=True, keep_tensors=True)
    tol = COMPARE_TOL[request.dtype]
    d_frames = (outcome.frames - ref.frames).abs().max().item()
    d_latents = (outcome.latents - ref.latents).abs().max().item()
    return {"reference": "the same generation in a single process", "max_abs_diff_frames": d_frames,
            "max_abs_diff_latents": d_latents, "tolerance": tol,
            "equal": d_frames <= tol and d_latents <= tol}  # NaN is not equal (max() would drop it)


def _print_report(report, request, out):
    for note in report["model"]["notes"]:
        print(f"Note: {note}", file=out)
    p, r = report["parallel"], report["request"]
    shape = "image" if r.get("media") == "image" else f"{r['num_frames']} frames"
    print(f"\nringsp generate: {report['model']['name']}, {r['width']}x{r['height']}, {shape}, "
          f"{r['steps']} steps, {r['dtype']}, {p['num_gpus']} x {report['device']['type']} "
          f"({p['launcher']}, ulysses {p['ulysses_degree']} x ring {p['ring_degree']} x cfg {p['cfg_degree']}, "
          f"parallel VAE {'on' if p['parallel_vae'] else 'off'})", file=out)
    print("\nStage time breakdown\n" + format_stage_table(report), file=out)
    what = "image" if r.get("media") == "image" else "video"
    print(f"(model loading {report['load_s']:.2f} s and writing the {what} {report['save_s']:.2f} s are outside "
          "the total)", file=out)
    if "compile" in report:
        c = report["compile"]
        print(f"(compile warm-up: torch.compile {c['mode']}{' + CUDA graphs' if c['cuda_graphs'] else ''}, "
              f"{c['warmup_steps']} untimed steps, {c['warmup_s']:.2f} s, also outside the total)", file=out)
    print("\nPeak memory per rank\n" + format_memory_table(report), file=out)
    if "output" in report:
        print(describe(report["output"], request.media), file=out)
    problem = describe_nonfinite(report.get("nonfinite"))
    if problem:
        print(f"ERROR: {problem}", file=out)


def _describe_check(c, num_gpus, dtype):
    if "error" in c:
        return f"\nSP check FAILED: the single-process run raised {c['error']}; the {num_gpus}-process result is kept"
    verdict = "equals" if c["equal"] else "DIFFERS FROM"
    return (f"\nSP check: the {num_gpus}-process result {verdict} the single-process result: max |diff| "
            f"frames {c['max_abs_diff_frames']:.3g}, latents {c['max_abs_diff_latents']:.3g} "
            f"(tolerance {c['tolerance']:g} for {dtype})")


def write_json(report, path):
    import json

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
