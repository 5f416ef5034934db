"""Before any decoding collective: every rank shows the others what it was called with, and
all ranks fail together when one rank's input is bad or the ranks disagree.

One all-gather of a fixed-size float64 vector per rank: an error message (as bytes) and
named numeric fields. Checking locally and then failing alone would leave the other ranks
waiting in the first halo exchange; this way each rank raises a ValueError that names the
rank and the problem.
"""
import math

import torch
import torch.distributed as dist

__all__ = ["Field", "agree"]

_MESSAGE_BYTES = 512
# Room for field values; fixed so that a rank that could not compute its fields still
# sends a vector of the same size as everyone else.
_FIELD_SLOTS = 64


class Field:
    """A named value that every rank must agree on: a tuple of floats, compared exactly or
    with a relative tolerance (for checksums whose summation order may differ)."""

    def __init__(self, name, values, rel_tol=0.0):
        self.name = name
        self.values = tuple(float(v) for v in values)
        self.rel_tol = rel_tol


def agree(group, device, fields, local_error=None):
    """Raises on every rank if any rank had a local_error or the ranks' fields differ.

    The rank whose input was bad re-raises its own exception; the others raise ValueError.
    Every rank must pass fields with the same names and lengths unless it has an error.
    """
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if sum(len(f.values) for f in fields) > _FIELD_SLOTS:
        raise ValueError(f"at most {_FIELD_SLOTS} field values fit in the agreement vector")
    mine = _encode(local_error, fields, device)
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine, group=group)
    rows = [t.cpu() for t in everyone]

    failed = [(r, _decode_message(row)) for r, row in enumerate(rows) if row[0] != 0]
    if failed:
        if local_error is not None:
            raise local_error
        r, message = failed[0]
        raise ValueError(f"rank {r} of {world} rejected its input: {message}")
    _check_same(fields, rows, rank)


def _encode(local_error, fields, device):
    vec = torch.zeros(1 + _MESSAGE_BYTES + _FIELD_SLOTS, dtype=torch.float64)
    if local_error is not None:
        raw = f"{type(local_error).__name__}: {local_error}".encode()[:_MESSAGE_BYTES]
        vec[0] = 1 + len(raw)
        vec[1 : 1 + len(raw)] = torch.tensor(list(raw), dtype=torch.float64)
        # Fields stay zero: a rank with an error may not have been able to compute them.
        return vec.to(device)
    values = [v for f in fields for v in f.values]
    vec[1 + _MESSAGE_BYTES : 1 + _MESSAGE_BYTES + len(values)] = torch.tensor(values, dtype=torch.float64)
    return vec.to(device)


def _decode_message(row):
    n = int(row[0]) - 1
    return bytes(int(b) for b in row[1 : 1 + n]).decode(errors="replace")


def _check_same(fields, rows, rank):
    offset = 1 + _MESSAGE_BYTES
    for field in fields:
        n = len(field.values)
        values = [tuple(row[offset : offset + n].tolist()) for row in rows]
        offset += n
        for r, theirs in enumerate(values):
            if not _close(values[0], theirs, field.rel_tol):
                raise ValueError(
                    f"ranks disagree on {field.name}: rank 0 has {_show(values[0])}, rank {r} has {_show(theirs)}"
                    f" (this is rank {rank}); every rank must pass the same arguments"
                )


def _close(a, b, rel_tol):
    return all(_same(x, y, rel_tol) for x, y in zip(a, b))


def _same(x, y, rel_tol):
    if math.isnan(x) or math.isnan(y):  # NaN latents are not this check's business
        return math.isnan(x) and math.isnan(y)
    return x == y or math.isclose(x, y, rel_tol=rel_tol, abs_tol=0.0)


def _show(values):
    ints = all(float(v).is_integer() for v in values)
    return tuple(int(v) for v in values) if ints else values
