"""Communication primitives of the SP attention: the ring's P2P exchange and the
Ulysses all-to-all. Device-agnostic: streams only where the device has them.
"""
import torch
import torch.distributed as dist

from .devices import comm_stream, stream_module
from .fail_together import wait


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
                wait(req)
            return
        if not handle:
            return
        with self.mod.stream(self.stream):
            for req in handle:
                req.wait()
            done = self.mod.Event()
            done.record(self.stream)
        self.mod.current_stream(self.device).wait_event(done)


_exchanges = {}


def ring_exchange(group, device):
    """The RingExchange of (group, device), built once: its ranks and stream are per call
    host work otherwise."""
    key = (group, torch.device(device))
    if key not in _exchanges:
        _exchanges[key] = RingExchange(group, device)
    return _exchanges[key]


def all_to_all(x, group):
    """x [world, ...] (slice i goes to rank i) -> [world, ...] (slice i came from rank i)."""
    x = x.contiguous()
    out = torch.empty_like(x)
    wait(dist.all_to_all_single(out, x, group=group, async_op=True))
    return out
