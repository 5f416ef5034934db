"""Fail-fast agreement of ranks on a call's arguments.

Before the first collective of a call with a new argument signature, ranks all-gather a
hash of their fingerprint (shapes, dtypes, config, seq_len, and any local argument error).
If the hashes differ, the fingerprints themselves are gathered and EVERY rank raises a
ValueError naming the fields that differ and each rank's value, instead of entering a
collective with mismatched sizes (a hang or silent corruption).

Verified signatures are cached per process group, so steady-state calls pay nothing. The
price: a rank whose arguments change while its peers repeat an already verified signature
is not caught here (it ends at the process group's timeout). Set CHECK_EVERY_CALL = True
(or RINGSP_CHECK_EVERY_CALL=1) to check every call while debugging.
"""
import hashlib
import json
import os

import torch
import torch.distributed as dist

from .devices import control_device

CHECK_EVERY_CALL = os.environ.get("RINGSP_CHECK_EVERY_CALL", "0") == "1"
_verified = set()


def describe(t):
    """A tensor's fingerprint entry (shape, dtype, device type); non-tensors by type name."""
    if isinstance(t, torch.Tensor):
        return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "device": t.device.type}
    return None if t is None else {"type": type(t).__name__}


def _group_key(group):
    group = group or dist.group.WORLD
    return getattr(group, "group_name", None) or id(group)


def agree(group, op, fields, local_error=None, cache=True):
    """Checks that every rank of `group` calls `op` with equal `fields` (a JSON-able dict).

    cache: skip the exchange when this exact call was verified before (for per-call checks
    on hot paths). A one-off call passes False: a cached skip cannot see a peer that now
    passes a *different* call it has also seen verified before.

    local_error: an exception this rank's own argument checks raised; it is re-raised here
    after the exchange (and the peers raise a ValueError naming this rank), so a rank with
    bad arguments never leaves its peers waiting inside a collective.
    """
    world = dist.get_world_size(group)
    if world == 1:
        if local_error is not None:
            raise local_error
        return
    if local_error is not None:
        fields = dict(fields, error=f"{type(local_error).__name__}: {local_error}")
    blob = json.dumps({"op": op, **fields}, sort_keys=True, default=str).encode()
    key = (_group_key(group), blob)
    if cache and local_error is None and key in _verified and not CHECK_EVERY_CALL:
        return
    device = control_device(group)
    digest = int.from_bytes(hashlib.blake2b(blob, digest_size=7).digest(), "little")
    metas = _all_gather(torch.tensor([digest, len(blob)], dtype=torch.int64, device=device), group)
    digests = {int(m[0]) for m in metas}
    if len(digests) == 1 and local_error is None:
        _verified.add(key)
        return
    length = max(int(m[1]) for m in metas)
    padded = torch.zeros(length, dtype=torch.uint8, device=device)
    padded[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(device)
    prints = [json.loads(bytes(p.cpu().tolist()[: int(m[1])])) for p, m in zip(_all_gather(padded, group), metas)]
    if local_error is not None:
        raise local_error
    raise ValueError(disagreement_message(op, prints))


def _all_gather(t, group):
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t, group=group)
    return out


def disagreement_message(op, prints):
    """`op`: ranks disagree on ...; one line per differing field with each rank's value."""
    errors = [f"rank {r}: {p['error']}" for r, p in enumerate(prints) if "error" in p]
    if errors:
        return f"{op}: argument checks failed on some ranks ({'; '.join(errors)})"
    names = sorted(set().union(*prints))
    lines = []
    for name in names:
        values = [p.get(name) for p in prints]
        if any(v != values[0] for v in values):
            per_rank = ", ".join(f"rank {r}={json.dumps(v)}" for r, v in enumerate(values))
            lines.append(f"  {name}: {per_rank}")
    return f"{op}: ranks disagree on their arguments:\n" + "\n".join(lines)
