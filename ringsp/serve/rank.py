"""One worker process of `ringsp serve`: joins the process group, builds the Engine once
(load, sequence parallelism, compile, warm-up), then runs requests until told to stop.

Rank 0 receives each request from the server (a pipe) and broadcasts it over a gloo control
group; every rank runs it, reporting its progress marks (stage starts, step ends) to the
server on its own pipe; then all ranks exchange how the request ended, so that they leave
it together and rank 0 reports one outcome. While idle, rank 0 broadcasts a tick now and
then, so that no rank waits in the broadcast longer than the group's timeout.

Messages to the server: ("ready", rank, tokenizer or None), ("mark", rank, run_id, kind,
what), ("where", rank, run_id, (state, place)) every WHERE_S during a run (a thread looks
at where the rank's main thread is: "waiting" inside torch.distributed, or "busy" at a
line), ("error", rank, run_id, text) as soon as a rank's run raised, and from rank 0
("done", 0, run_id, report) or ("failed", 0, run_id, text, out_of_step): after a failure
inside ringsp.fail_together the process groups are out of step, and the workers end.
"""
import datetime
import os
import pickle
import signal
import sys
import threading
import time
import traceback

# How often a rank says where its main thread is during a run (named when a run hangs).
WHERE_S = 1.0

STOP, TICK, RUN = "stop", "tick", "run"


def idle_tick_s(timeout_s):
    """How long rank 0 waits for a request before broadcasting a tick: well inside the timeout."""
    return max(0.05, min(30.0, timeout_s / 4))


def serve_rank(local_rank, config, port, jobs, events, warmup_steps):
    """The worker process: config is the engine's GenerateRequest (the served model and
    layout); jobs (rank 0 only) brings (RUN, run_id, request) and STOP; events goes back."""
    def build_engine():
        from ringsp.cli.worker import Engine

        engine = Engine(config, distributed=True)
        if warmup_steps:
            engine.warm_up(config, warmup_steps)
        return engine

    serve_loop(local_rank, config, port, jobs, events, build_engine)


def serve_loop(local_rank, config, port, jobs, events, build_engine):
    """serve_rank's body, with the engine from build_engine() (after the process group and
    the control group exist): anything with run(request, ...), rank, device and pipe."""
    import torch.distributed as dist

    from ringsp.cli.launch import exit_spawned_rank, join_spawned_group

    # A Ctrl-C reaches the whole terminal's process group: the server stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    join_spawned_group(local_rank, config, port)
    control = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=config.timeout_s))
    engine = build_engine()
    events = _Sender(events)
    events.send(("ready", local_rank, _tokenizer(engine) if local_rank == 0 else None))
    running = {"run": None}
    _start_where_reporter(local_rank, events, running)
    tick = idle_tick_s(config.timeout_s)
    while True:
        message = _broadcast(_next_message(jobs, tick) if local_rank == 0 else None, control)
        if message[0] == STOP:
            break
        if message[0] == RUN:
            running["run"] = message[1]
            go_on = _run(engine, message[1], message[2], events, control)
            running["run"] = None
            if not go_on:
                break
    dist.destroy_process_group()
    exit_spawned_rank()


class _Sender:
    """The rank's pipe to the server, shared by the main thread and the where-reporter."""

    def __init__(self, conn):
        self._conn, self._lock = conn, threading.Lock()

    def send(self, message):
        with self._lock:
            self._conn.send(message)


def _start_where_reporter(rank, events, running):
    main = threading.main_thread().ident

    def report():
        while True:
            time.sleep(WHERE_S)
            run_id = running["run"]
            if run_id is not None:
                try:
                    events.send(("where", rank, run_id, where(main)))
                except (OSError, ValueError):  # the server is gone
                    return

    threading.Thread(target=report, name="ringsp-where", daemon=True).start()


def where(thread_id):
    """("waiting", the torch.distributed call) if the thread is inside one, else ("busy",
    "file:line (function)") of its innermost Python frame."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return ("busy", "unknown")
    stack = traceback.extract_stack(frame)
    # the outermost call into torch.distributed, past its logging decorators ("wrapper")
    waits = [f for f in stack if f"torch{os.sep}distributed" in f.filename and f.name != "wrapper"]
    if waits:
        return ("waiting", waits[0].name)
    last = stack[-1]
    return ("busy", f"{os.path.basename(last.filename)}:{last.lineno} ({last.name})")


def _next_message(jobs, tick):
    """The server's next message, a tick after `tick` seconds without one, or STOP if the
    server is gone (its end of the pipe closed)."""
    try:
        return jobs.recv() if jobs.poll(tick) else (TICK,)
    except (EOFError, OSError):
        return (STOP,)


def _broadcast(message, group):
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def _run(engine, run_id, request, events, control):
    """One request on this rank; returns False when the workers cannot go on after it."""
    import torch.distributed as dist

    from ringsp.cli.nonfinite import describe_nonfinite

    def mark(kind, what):
        events.send(("mark", engine.rank, run_id, kind, what))

    error, outcome = None, None
    try:
        # Inside, ringsp.fail_together makes every rank raise when one does (the engine's guard).
        outcome = engine.run(request, progress=False, listener=mark)
    except Exception as exc:  # noqa: BLE001 - any failure of one request: report it
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
        events.send(("error", engine.rank, run_id, error))
        _release_memory(engine.device)
    ends = [None] * dist.get_world_size(control)
    dist.all_gather_object(ends, (error, groups_out_of_step()), group=control)  # the ranks leave together
    broken = any(out_of_step for _, out_of_step in ends)
    if engine.rank == 0:
        failed = [f"rank {r}: {e}" for r, (e, _) in enumerate(ends) if e is not None]
        nonfinite = describe_nonfinite(outcome.report.get("nonfinite")) if outcome is not None else None
        if failed:
            events.send(("failed", 0, run_id, "; ".join(failed), broken))
        elif nonfinite:  # every rank holds the same latents: nothing is out of step
            events.send(("failed", 0, run_id, nonfinite, False))
        else:
            events.send(("done", 0, run_id, outcome.report))
    return not broken


def groups_out_of_step():
    """True once a ringsp.fail_together region of this process has failed: its process groups
    are then out of step (a peer's collectives half matched) and every later region raises."""
    import importlib

    guard = importlib.import_module("ringsp.parallel.fail_together")  # the module, not the function
    return getattr(guard, "_failed", None) is not None


def _release_memory(device):
    """After a failed request (an OOM), the allocator's cached blocks go back for the next one."""
    import torch

    if device.type != "cpu":
        torch.get_device_module(device).empty_cache()


def _tokenizer(engine):
    """The pipeline's tokenizer for the server's prompt-length check, if it pickles."""
    tokenizer = getattr(engine.pipe, "tokenizer", None)
    try:
        pickle.dumps(tokenizer)
    except Exception:  # noqa: BLE001 - a tokenizer that cannot travel: the server says so at start
        return None
    return tokenizer
