"""Persistent multi-process gloo pools for distributed tests.

    from tests.mp_pool import run_distributed
    results = run_distributed(world_size, fn, *args, timeout=120)

`fn` must be a picklable top-level function (e.g. defined in a test module; tests are
importable as the `tests` package). It runs on every rank of a gloo process group that is
already initialised; its return values come back as a list indexed by rank.
`backend="nccl"` gives a pool whose rank r owns GPU r (for GPU tests; skip them first
when torch.cuda.device_count() < world_size).

Spawning workers and initialising gloo costs seconds, so one pool per world size is kept
for the whole session and shared by every test; pools are torn down at interpreter exit.
An exception on a rank is re-raised here (same type when it pickles) with the rank and the
remote traceback attached. A rank that does not answer within `timeout` fails the call with
TimeoutError, and the pool is torn down (the next call builds a fresh one), so a hanging
collective never hangs pytest.
"""
import atexit
import itertools
import multiprocessing
import os
import pickle
import queue
import socket
import sys
import time
import traceback

# How long a freshly spawned pool may take to import torch and initialise gloo.
STARTUP_TIMEOUT_S = 180.0
# The gloo collective timeout inside the workers: a dead peer ends in an error, not a hang.
COLLECTIVE_TIMEOUT_S = 60.0
# After one rank failed, how long to wait for the others before the pool is presumed stuck
# (a rank that failed before a collective leaves its peers waiting inside it).
STRAGGLER_GRACE_S = 5.0
_POLL_S = 0.2

_STOP = "stop"


class RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised on a worker rank."""

    def __str__(self):
        return self.args[0]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- worker side


def _worker_main(rank, world_size, backend, port, task_q, result_q):
    # Set before torch (and its OpenMP runtime) loads: the CI machine has 2 cores for all ranks.
    os.environ.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo",
    )
    try:
        import datetime

        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        device = None
        if backend == "nccl":
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend, init_method="env://", rank=rank, world_size=world_size, device_id=device,
            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
    except BaseException:  # noqa: BLE001 - reported to the parent, which tears the pool down
        result_q.put((None, rank, False, _pack_error(sys.exc_info()[1])))
        return
    result_q.put((None, rank, True, None))
    while True:
        msg = task_q.get()
        if msg == _STOP:
            break
        task_id, payload = msg
        result_q.put((task_id, rank) + _run_task(payload))
    dist.destroy_process_group()


def _run_task(payload):
    try:
        fn, args = pickle.loads(payload)
        value = fn(*args)
        return True, pickle.dumps(value)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the test process
        return False, _pack_error(exc)


def _pack_error(exc):
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:  # noqa: BLE001 - unpicklable exceptions travel as text only
        blob = None
    return blob, type(exc).__name__, str(exc), tb


# ----------------------------------------------------------------------------- parent side


class _Pool:
    def __init__(self, world_size, backend):
        mp = multiprocessing.get_context("spawn")
        self.world_size = world_size
        self.result_q = mp.Queue()
        self.task_qs = [mp.Queue() for _ in range(world_size)]
        port = _free_port()
        self.procs = [
            mp.Process(target=_worker_main, args=(r, world_size, backend, port, self.task_qs[r], self.result_q),
                       daemon=True, name=f"mp_pool-{backend}{world_size}-r{r}")
            for r in range(world_size)
        ]
        for p in self.procs:
            p.start()
        self._ids = itertools.count()
        try:
            replies = self._collect(None, STARTUP_TIMEOUT_S)
        except BaseException:
            self.close(force=True)
            raise
        failed = [(r, err) for r, (ok, err) in sorted(replies.items()) if not ok]
        if failed:
            self.close(force=True)
            rank, err = failed[0]
            raise RuntimeError(f"mp_pool: rank {rank} of {world_size} failed to initialise gloo:\n{err[3]}")

    def run(self, fn, args, timeout):
        task_id = next(self._ids)
        payload = pickle.dumps((fn, args))
        for q in self.task_qs:
            q.put((task_id, payload))
        return self._collect(task_id, timeout)

    def _collect(self, task_id, timeout):
        """Replies {rank: (ok, value)} for task_id; raises TimeoutError when ranks stay silent."""
        replies = {}
        deadline = time.monotonic() + timeout
        while len(replies) < self.world_size:
            now = time.monotonic()
            if now >= deadline:
                missing = sorted(set(range(self.world_size)) - set(replies))
                raise _Stuck(replies, f"ranks {missing} of {self.world_size} did not finish within {timeout:.0f}s")
            try:
                tid, rank, ok, value = self.result_q.get(timeout=min(_POLL_S, deadline - now))
            except queue.Empty:
                dead = [(r, p.exitcode) for r, p in enumerate(self.procs) if r not in replies and not p.is_alive()]
                if dead:
                    raise _Stuck(replies, "worker processes died (rank, exit code): " + str(dead))
                continue
            if tid != task_id:
                continue  # a stale reply cannot occur after a rebuild, but never mix tasks
            replies[rank] = (ok, value)
            if not ok:  # the others get a short grace, then the pool is presumed stuck
                deadline = min(deadline, time.monotonic() + STRAGGLER_GRACE_S)
        return replies

    def close(self, force=False):
        if not force:
            for q in self.task_qs:
                try:
                    q.put(_STOP)
                except Exception:  # noqa: BLE001
                    pass
            for p in self.procs:
                p.join(timeout=5)
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for q in self.task_qs + [self.result_q]:
            q.cancel_join_thread()
            q.close()


class _Stuck(Exception):
    """Internal: some ranks did not answer; carries the replies that did arrive."""

    def __init__(self, replies, reason):
        super().__init__(reason)
        self.replies = replies


_pools = {}


def _pool(key):
    if key not in _pools:
        _pools[key] = _Pool(*key)
    return _pools[key]


def _discard(key):
    pool = _pools.pop(key, None)
    if pool is not None:
        pool.close(force=True)


def discard_pool(world_size, backend="gloo"):
    """Stops the pool of this size and backend (the next call builds a fresh one): for tests
    that leave their process groups out of step on purpose."""
    _discard((world_size, backend))


def shutdown_pools():
    """Stops every cached pool (also run at interpreter exit)."""
    for key in list(_pools):
        _pools.pop(key).close()


atexit.register(shutdown_pools)


def run_distributed(world_size, fn, *args, timeout=120, backend="gloo"):
    """Runs fn(*args) on every rank of a `backend` group of world_size processes; returns
    the list of return values indexed by rank. See the module docstring for failures."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    try:
        pickle.dumps((fn, args))
    except Exception as exc:
        raise TypeError(f"fn and args must be picklable (fn must be a top-level function): {exc}") from exc
    key = (world_size, backend)
    pool = _pool(key)
    try:
        replies = pool.run(fn, args, timeout)
    except _Stuck as stuck:
        _discard(key)
        _raise_first_error(stuck.replies, world_size)
        raise TimeoutError(f"run_distributed({fn.__qualname__}): {stuck}; the pool was torn down") from None
    except BaseException:
        _discard(key)
        raise
    _raise_first_error(replies, world_size)
    return [pickle.loads(replies[r][1]) for r in range(world_size)]


def _raise_first_error(replies, world_size):
    errors = sorted((r, err) for r, (ok, err) in replies.items() if not ok)
    if not errors:
        return
    rank, (blob, type_name, message, tb) = errors[0]
    others = ", ".join(f"rank {r}: {e[1]}: {e[2]}" for r, e in errors[1:])
    header = f"raised on rank {rank} of {world_size}" + (f" (also failed: {others})" if others else "")
    cause = RemoteTraceback(f"\n[rank {rank}] remote traceback:\n{tb}")
    exc = pickle.loads(blob) if blob is not None else RuntimeError(f"{type_name}: {message}")
    if hasattr(exc, "add_note"):
        exc.add_note(header)
    else:  # Python < 3.11
        exc = RuntimeError(f"{header}: {type_name}: {message}")
    raise exc from cause
