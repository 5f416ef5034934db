"""Communication primitives of the SP attention: the ring's P2P exchange and the
Ulysses all-to-all. Device-agnostic: streams only where the device has them.

Debug switches for bench/sp_attention.py (not API): `debug.skip_transfers` makes the ring
keep attending to its own block instead of exchanging (to time compute without
communication); `debug.skip_compute` makes the ring skip its attention steps (to time the
exchange alone). Results are wrong while either is set.
"""
import contextlib
from types import SimpleNamespace

import torch
import torch.distributed as dist

from .devices import comm_stream, stream_module

debug = SimpleNamespace(skip_transfers=False, skip_compute=False)


@contextlib.contextmanager
def debug_mode(skip_transfers=False, skip_compute=False):
    old = (debug.skip_transfers, debug.skip_compute)
    debug.skip_transfers, debug.skip_compute = skip_transfers, skip_compute
    try:
        yield
    finally:
        debug.skip_transfers, debug.skip_compute = old


class RingExchange:
    """Sends a buffer to the next ring rank and receives one from the previous, in the
    background: on an accelerator on a side stream ordered by events, on CPU through the
    backend's own asynchronous P2P (gloo runs it on its threads)."""

    def __init__(self, group, device):
        self.group = group = group or dist.group.WORLD
        self.size = dist.get_world_size(group)
        rank = dist.get_rank(group)
        self.next = dist.get_global_rank(group, (rank + 1) % self.size)
        self.prev = dist.get_global_rank(group, (rank - 1) % self.size)
        self.device = torch.device(device)
        self.mod = stream_module(device)
        self.stream = comm_stream(device)

    def start(self, send_buf, recv_buf, send=True, recv=True):
        """Starts send_buf -> next and prev -> recv_buf; returns a handle for wait()."""
        ops = []
        if send:
            ops.append(dist.P2POp(dist.isend, send_buf, self.next, group=self.group))
        if recv:
            ops.append(dist.P2POp(dist.irecv, recv_buf, self.prev, group=self.group))
        if not ops:
            return []
        if self.stream is None:
            return dist.batch_isend_irecv(ops)
        # send_buf was written and recv_buf last read on the compute stream
        self.stream.wait_stream(self.mod.current_stream(self.device))
        with self.mod.stream(self.stream):
            return dist.batch_isend_irecv(ops)

    def wait(self, handle):
        """Blocks (CPU) or orders the compute stream after the transfer (accelerator)."""
        if self.stream is None:
            for req in handle:
                req.wait()
            return
        if not handle:
            return
        with self.mod.stream(self.stream):
            for req in handle:
                req.wait()
            done = self.mod.Event()
            done.record(self.stream)
        self.mod.current_stream(self.device).wait_event(done)


def all_to_all(x, group):
    """x [world, ...] (slice i goes to rank i) -> [world, ...] (slice i came from rank i)."""
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def all_gather_cat(x, group, dim):
    """Concatenation along dim of x from every rank of the group, in rank order."""
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=dim)
