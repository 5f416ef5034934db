"""Failing together: a guarded region (a forward, a VAE decode) that, when it raises on one
rank of a group, makes every rank of the group raise within seconds, naming that error.

    with ringsp.fail_together(group):   # None = WORLD; a no-op without a process group
        out = pipe.transformer(...)

Without it, a rank that raises inside a forward (an OOM on one GPU, a bad hook on one rank)
leaves its peers blocked in their next collective until the group's timeout (10 minutes by
default). Inside the guard:

- the failing rank writes its error into the group's c10d store (the first failure of the
  region wins, atomically), marks the region over and re-raises its own exception;
- while a region is open, one watcher thread per process polls the store every `poll_s`
  seconds. ringsp's own collectives (ring P2P, Ulysses all-to-all, the gathers, the parallel
  VAE's halos; `wait` below) wait in slices of `poll_s` on host-blocking backends (gloo) and
  raise PeerFailure as soon as the watcher found a failure. Device backends (NCCL, HCCL) do
  not block the host in a collective but in its next synchronisation; there the watcher
  aborts the process groups, so the pending work ends in an error that the guard turns into
  PeerFailure;
- at the guard's exit the ranks meet once through the store: a region that ends cleanly on
  one rank ended cleanly on every rank.

Cost: no collective and no store traffic per attention call (a thread-local lookup per
ringsp collective; a gloo wait returns as soon as its work completes); per region one store
barrier (a few round trips to the store) and the watcher's poll.

After a failure the process groups are out of step (peers' collectives are left half
matched; device groups are aborted): a later `fail_together` in this process raises at once.
Destroy and re-initialise the process groups to go on.

Limits: on gloo, a collective that ringsp does not issue (a caller's own dist.all_reduce) is
not waited in slices and stays blocked until the failing process exits or the group's
timeout; a rank that dies without a Python exception (SIGKILL) records nothing: its peers
then wait at the guard's exit for at most `timeout_s` and raise TimeoutError.
"""
import datetime
import json
import threading
import time
import traceback

import torch.distributed as dist

from .groups import SINGLE

POLL_S = 0.1          # how often the watcher looks at the store, and a gloo wait's slice
DEFAULT_TIMEOUT_S = 600.0  # the exit meeting's limit (torch's default group timeout)
_PREFIX = "ringsp/fail_together/"
_MAX_TRACEBACK = 8000  # characters of the failing rank's traceback kept in the store

__all__ = ["fail_together", "PeerFailure", "wait", "DEFAULT_TIMEOUT_S", "POLL_S"]


class PeerFailure(RuntimeError):
    """Another rank of the group raised inside a fail_together region: `rank` (global rank),
    `error` ("Type: message") and `remote_traceback` (its traceback, as text)."""

    def __init__(self, rank, error, remote_traceback=None):
        self.rank, self.error, self.remote_traceback = rank, error, remote_traceback
        super().__init__(f"rank {rank} failed inside a fail_together region: {error}")

    def __reduce__(self):  # picklable (tests' process pools, torch's error files)
        return type(self), (self.rank, self.error, self.remote_traceback)


_failed = None  # after a failure: what happened (every later region raises at once)
_local = threading.local()  # .regions: this thread's open regions, innermost last
_counters = {}  # group -> regions entered so far (the same sequence on every rank)


def fail_together(group=None, *, timeout_s=DEFAULT_TIMEOUT_S, poll_s=POLL_S):
    """A context manager: see the module docstring. group: a ProcessGroup, None (WORLD) or
    groups.SINGLE; timeout_s: how long the exit meeting waits for ranks that neither finish
    nor fail; poll_s: the watcher's period (how soon peers learn of a failure)."""
    if not (timeout_s > 0 and poll_s > 0):
        raise ValueError(f"timeout_s and poll_s must be > 0, got {timeout_s} and {poll_s}")
    return _Guard(group, float(timeout_s), float(poll_s))


def wait(work):
    """work.wait() for ringsp's collectives: inside a region on a gloo group, in slices that
    end with PeerFailure once the watcher found a failure on another rank."""
    regions = getattr(_local, "regions", None)
    region = regions[-1] if regions else None
    if region is None or not region.host_blocking:
        return work.wait()
    while True:
        try:
            return work.wait(timeout=region.slice)
        except RuntimeError:
            if work.is_completed():  # it failed on its own: its error, not a timeout
                raise
        if region.peer is not None:
            raise PeerFailure(**region.peer)


class _Guard:
    def __init__(self, group, timeout_s, poll_s):
        self.group, self.timeout_s, self.poll_s = group, timeout_s, poll_s
        self.region = None

    def __enter__(self):
        if _failed is not None:
            raise RuntimeError(f"an earlier fail_together region failed ({_failed}); the process groups are out "
                               "of step: destroy and re-initialise them before the next region")
        if self.group is SINGLE or not dist.is_available() or not dist.is_initialized():
            return self
        if dist.get_world_size(self.group) == 1:
            return self
        self.region = _Region(self.group, self.timeout_s, self.poll_s)
        _local.__dict__.setdefault("regions", []).append(self.region)
        _WATCHER.add(self.region)
        return self

    def __exit__(self, exc_type, exc, tb):
        region = self.region
        if region is None:
            return False
        _local.regions.remove(region)
        _WATCHER.remove(region)
        if exc is None:
            region.meet()
            return False
        if isinstance(exc, PeerFailure):
            _fail(exc.error, abort=False)
            return False
        first = region.record(exc)
        if first["rank"] != region.rank:  # another rank failed first: this is a consequence
            _fail(first["error"], abort=False)
            raise PeerFailure(**first) from exc
        _fail(first["error"], abort=True)
        return False


class _Region:
    """One guarded region of one group: its store keys and what the watcher found."""

    def __init__(self, group, timeout_s, poll_s):
        pg = group or dist.group.WORLD
        self.store = _store_of(pg)
        self.size, self.rank = dist.get_world_size(group), dist.get_rank()
        self.index = _counters.get(pg, 0)
        _counters[pg] = self.index + 1
        self.host_blocking = dist.get_backend(group) == "gloo"
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self.slice = datetime.timedelta(seconds=poll_s)
        self.peer = None  # PeerFailure's arguments, once the watcher found a failure
        if self.index >= 2 and dist.get_rank(group) == 0:  # every rank has left region index - 2
            for name in ("done", "over", "error"):
                self.store.delete_key(self._key(name, self.index - 2))

    def _key(self, name, index=None):
        return f"{_PREFIX}{self.index if index is None else index}/{name}"

    def poll(self):
        """The first failure recorded in this region, or None (one store round trip)."""
        if self.peer is None and self.store.check([self._key("error")]):
            self.peer = json.loads(self.store.get(self._key("error")))
        return self.peer

    def record(self, exc):
        """Writes this rank's failure unless one is recorded already; returns the first."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_TRACEBACK:]
        mine = json.dumps({"rank": self.rank, "error": f"{type(exc).__name__}: {exc}",
                           "remote_traceback": text}).encode()
        first = self.store.compare_set(self._key("error"), "", mine)
        self.store.set(self._key("over"), "1")  # wakes the ranks waiting at the exit
        return json.loads(first)

    def meet(self):
        """The clean exit: waits until every rank ended the region or one failed in it."""
        if self.store.add(self._key("done"), 1) == self.size:
            self.store.set(self._key("over"), "1")
        else:
            self._wait_over()
        if self.poll() is not None:
            _fail(self.peer["error"], abort=False)
            raise PeerFailure(**self.peer)

    def _wait_over(self):
        deadline, pause = time.monotonic() + self.timeout_s, 1e-4
        while not self.store.check([self._key("over")]):
            if time.monotonic() > deadline:
                done = self.store.add(self._key("done"), 0)
                raise TimeoutError(f"fail_together: {self.size - done} of {self.size} ranks neither finished nor "
                                   f"failed the region within {self.timeout_s:g} s (a rank died or hangs)")
            time.sleep(pause)
            pause = min(2 * pause, self.poll_s)


def _store_of(pg):
    if hasattr(pg, "get_group_store"):
        return pg.get_group_store()
    return dist.PrefixStore(f"{pg.group_name}/", dist.distributed_c10d._get_default_store())


def _fail(error, abort):
    """Marks this process failed; abort: also abort its device process groups."""
    global _failed
    _failed = _failed or error
    if abort:
        _abort_device_groups()


def _abort_device_groups():
    """Ends the pending work of every NCCL / HCCL group of this process (gloo has no abort:
    its waits are sliced instead)."""
    for pg in list(dist.distributed_c10d._world.pg_map):
        try:
            if dist.get_backend(pg) != "gloo":
                pg.abort()
        except (RuntimeError, ValueError):  # already destroyed or aborted
            pass


class _Watcher:
    """One daemon thread per process that polls the store of every open region."""

    def __init__(self):
        self._open = set()
        self._cond = threading.Condition()
        self._thread = None

    def add(self, region):
        with self._cond:
            self._open.add(region)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ringsp-fail-together", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, region):
        with self._cond:
            self._open.discard(region)

    def _run(self):
        while True:
            with self._cond:
                while not self._open:
                    self._cond.wait()
                regions = list(self._open)
            period = min(r.poll_s for r in regions)
            for region in regions:
                try:
                    found = region.peer is None and region.poll() is not None
                except Exception:  # noqa: BLE001 - a store gone at shutdown: nothing left to watch
                    found = False
                if found and region.peer["rank"] != region.rank:
                    _fail(region.peer["error"], abort=True)
            time.sleep(period)


_WATCHER = _Watcher()
