"""Fail-fast agreement of ranks on a call's arguments, for the parallel layer and the VAE.

Before the first collective of a call, ranks all-gather a hash of their fingerprint (the
operation, named fields such as shapes, dtypes, config, and any local argument error). If
the hashes differ, the fingerprints themselves are gathered and EVERY rank raises the same
ValueError, naming each field that differs and each rank's value in plain terms (dtype
names, shapes as tuples), instead of entering a collective with mismatched sizes (a hang
or silent corruption). A rank whose own argument checks failed re-raises its exception;
the others raise a ValueError naming that rank and its error.

Checksums (`Checksum`) are compared with a relative tolerance: sums whose summation order
differs between devices agree although their hashes do not.

The exchange runs on `control_device(group)`, chosen from the group's backend alone, so a
rank that could not even look at its tensors picks the same device as its peers.

Verified signatures are cached per process group (cache=True), so steady-state calls pay
nothing. The price: a rank whose arguments change while its peers repeat an already
verified signature is not caught here (it ends at the process group's timeout). Set
CHECK_EVERY_CALL = True (or RINGSP_CHECK_EVERY_CALL=1) to check every call while debugging.
"""
import hashlib
import json
import math

import torch
import torch.distributed as dist

import ringsp_kernels as rk

from .devices import control_device
from .gather import all_gather_cat

__all__ = ["agree", "describe", "dtype_name", "Checksum", "disagreement_message"]

CHECK_EVERY_CALL = rk.settings.current().check_every_call  # RINGSP_CHECK_EVERY_CALL, read once
_verified = set()


class Checksum:
    """Numbers that every rank must have within a relative tolerance (e.g. sums of weights
    or inputs, whose last bits depend on the summation order). NaN equals NaN here: NaN
    inputs are not the agreement's business."""

    def __init__(self, values, rel_tol=1e-7):
        self.values = [float(v) for v in values]
        self.rel_tol = float(rel_tol)


def dtype_name(dtype):
    """'bfloat16' for torch.bfloat16: how dtypes appear in fingerprints and messages."""
    return str(dtype).replace("torch.", "")


def describe(t):
    """A tensor's fingerprint entry (shape, dtype, device type); non-tensors by type name."""
    if isinstance(t, torch.Tensor):
        return {"shape": list(t.shape), "dtype": dtype_name(t.dtype), "device": t.device.type}
    return None if t is None else {"type": type(t).__name__}


def _group_key(group):
    group = group or dist.group.WORLD
    return getattr(group, "group_name", None) or id(group)


def agree(group, op, fields, local_error=None, cache=True):
    """Checks that every rank of `group` (None = WORLD) calls `op` with equal `fields`.

    fields: {name: value}; values are JSON-able (nested dicts and lists allowed) or a
    Checksum. Raises on every rank if any rank had a local_error or the fields differ.

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
    blob = _fingerprint(op, fields, local_error)
    key = (_group_key(group), blob)
    if cache and local_error is None and key in _verified and not CHECK_EVERY_CALL:
        return
    device = control_device(group)
    digest = int.from_bytes(hashlib.blake2b(blob, digest_size=7).digest(), "little")
    meta = all_gather_cat(torch.tensor([[digest, len(blob)]], dtype=torch.int64, device=device), group, 0).cpu()
    if len(set(meta[:, 0].tolist())) == 1 and local_error is None:
        if cache:
            _verified.add(key)
        return
    prints = _gather_prints(blob, meta[:, 1].tolist(), group, device)
    if local_error is not None:
        raise local_error
    message = disagreement_message(op, prints)
    if message is not None:
        raise ValueError(message)
    # Only checksums differed, and only within their tolerance: the ranks agree.


def _fingerprint(op, fields, local_error):
    exact = {k: v for k, v in fields.items() if not isinstance(v, Checksum)}
    checksums = {k: [v.values, v.rel_tol] for k, v in fields.items() if isinstance(v, Checksum)}
    doc = {"op": op, "fields": exact, "checksums": checksums}
    if local_error is not None:
        doc["error"] = f"{type(local_error).__name__}: {local_error}"
    return json.dumps(doc, sort_keys=True, default=str).encode()


def _gather_prints(blob, lengths, group, device):
    """Every rank's fingerprint, decoded (one gather of the padded byte strings)."""
    mine = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(device)
    every = all_gather_cat(mine, group, 0, sizes=lengths).cpu()
    starts = [sum(lengths[:r]) for r in range(len(lengths))]
    return [json.loads(bytes(every[s : s + n].tolist())) for s, n in zip(starts, lengths)]


def disagreement_message(op, prints):
    """The message every rank raises for these fingerprints, or None when they agree.

    One line per differing field: `  latents dtype: rank 0 has bfloat16, rank 1 has float32`.
    """
    world = len(prints)
    errors = [(r, p["error"]) for r, p in enumerate(prints) if "error" in p]
    if errors:
        detail = "; ".join(f"rank {r} of {world} rejected its arguments: {e}" for r, e in errors)
        return f"{op}: {detail}"
    ops = [p["op"] for p in prints]
    if len(set(ops)) > 1:
        return "ranks are in different calls:\n" + _line("operation", ops)
    lines = _differences([p["fields"] for p in prints], "", _same_exact, _show)
    lines += _differences([p["checksums"] for p in prints], "", _same_checksum, _show_checksum)
    if not lines:
        return None
    return f"{op}: ranks disagree on their arguments (every rank must pass the same):\n" + "\n".join(lines)


def _differences(dicts, prefix, same, show):
    lines = []
    for name in sorted(set().union(*dicts)):
        values = [d.get(name, _MISSING) for d in dicts]
        if all(same(v, values[0]) for v in values):
            continue
        label = f"{prefix}{name}"
        if show is _show and all(isinstance(v, dict) for v in values):
            lines += _differences(values, label + " ", same, show)  # "q shape", "VAE config z_dim"
        else:
            lines.append(_line(label, values, show))
    return lines


def _line(label, values, show=None):
    show = show or _show
    return f"  {label}: " + ", ".join(f"rank {r} has {show(v)}" for r, v in enumerate(values))


_MISSING = object()  # a field that a rank did not pass


def _same_exact(a, b):
    if a is _MISSING or b is _MISSING:
        return a is b
    # JSON text, not ==: NaN equals itself, and 1 vs True differ.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _same_checksum(a, b):
    if a is _MISSING or b is _MISSING:
        return a is b
    (xs, tol), (ys, _) = a, b
    return len(xs) == len(ys) and all(_close(x, y, tol) for x, y in zip(xs, ys))


def _close(x, y, rel_tol):
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y or math.isclose(x, y, rel_tol=rel_tol, abs_tol=0.0)


def _show(value):
    """A fingerprint value in plain terms: shapes as tuples, dtype names bare."""
    if value is _MISSING:
        return "no such field"
    if isinstance(value, list):
        return "(" + ", ".join(_show(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {_show(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def _show_checksum(value):
    if value is _MISSING:
        return _show(value)
    values = value[0]
    return repr(values[0]) if len(values) == 1 else _show([repr(v) for v in values])
