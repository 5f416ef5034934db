"""Validation of the SP attention arguments, shared by ring, Ulysses and USP.

Checks run locally first; their error (if any) travels in the cross-rank fingerprint (see
agreement.py), so a rank with bad arguments makes every rank raise instead of hanging.
"""
from dataclasses import dataclass

import torch

import ringsp_kernels as rk

from . import agreement
from .agreement import agree, describe
from .layout import check_seq_len


@dataclass
class AttentionArgs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    seq_len: int
    scale: float | None
    joint: tuple | None  # (joint_q, joint_k, joint_v, joint_len) or None
    precision: str | None = None  # None: q's dtype; "fp8" / "int8": 8-bit attention inside (CUDA)


def _check_qkv(q, k, v, scale):
    """The ops' checks (ringsp_kernels.check_qkv), then what shards add: k/v of q's shape."""
    rk.check_qkv(q, k, v, scale)
    if q.shape[1] == 0:
        raise ValueError("q has an empty local sequence (S_local = 0)")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but q has {tuple(q.shape)} (self-attention shards)")


def _check_joint(q, joint_q, joint_k, joint_v, joint_len):
    given = [t is not None for t in (joint_q, joint_k, joint_v)]
    if not any(given):
        if joint_len is not None:
            raise ValueError("joint_len was given without joint_q/joint_k/joint_v")
        return None
    if not all(given):
        raise ValueError("joint_q, joint_k and joint_v must be given together")
    rk.check_like("joint_q", joint_q, q)
    rk.check_qkv(joint_q, joint_k, joint_v, names=("joint_q", "joint_k", "joint_v"))
    if joint_k.shape != joint_q.shape:
        raise ValueError(f"joint_k has shape {tuple(joint_k.shape)} but joint_q has {tuple(joint_q.shape)}")
    for dim, what in ((0, "batch"), (2, "heads"), (3, "head dim")):
        if joint_q.shape[dim] != q.shape[dim]:
            raise ValueError(f"joint_q has {what} {joint_q.shape[dim]} but q has {q.shape[dim]}")
    text = joint_q.shape[1]
    if joint_len is None:
        joint_len = text
    elif isinstance(joint_len, bool) or not isinstance(joint_len, int):
        raise TypeError(f"joint_len must be an int or None, got {type(joint_len).__name__}")
    elif not 0 <= joint_len <= text:
        raise ValueError(f"joint_len={joint_len} is out of range [0, {text}] (joint tensors have {text} tokens)")
    return joint_q, joint_k, joint_v, joint_len


_passed = {}  # call signature -> (seq_len, scale, joint_len, precision) of a call that passed the checks
_MAX_PASSED = 4096


def _signature(op, group, q, k, v, seq_len, scale, joint_q, joint_k, joint_v, joint_len, extra, precision):
    """A hashable key of everything the checks and the agreement look at, or None when an
    argument is not what a valid call passes (the full path reports it)."""
    tensors = (q, k, v) if joint_q is None else (q, k, v, joint_q, joint_k, joint_v)
    if not all(type(t) is torch.Tensor for t in tensors):
        return None
    meta = tuple((t.shape, t.dtype, t.device) for t in tensors)
    extras = None if extra is None else tuple(sorted(extra.items()))
    # types too: True == 1 as a key, but a bool is no valid length or scale
    scalars = tuple((type(x), x) for x in (seq_len, scale, joint_len, precision))
    return op, group, meta, scalars, extras


def prepare(op, group, sp_world, q, k, v, seq_len, scale, joint_q, joint_k, joint_v, joint_len, extra=None,
            precision=None):
    """Validates one call's arguments and checks that every rank of `group` agrees on them.
    Returns AttentionArgs; raises on every rank if any rank's arguments are bad or differ.

    A call whose signature (shapes, dtypes, devices, lengths, scale, group) passed before
    costs one dict lookup: the checks depend on nothing else, and the agreement of that
    signature is cached by the agreement module in the same way."""
    key = None if agreement.CHECK_EVERY_CALL else _signature(
        op, group, q, k, v, seq_len, scale, joint_q, joint_k, joint_v, joint_len, extra, precision)
    hit = _passed.get(key) if key is not None else None
    if hit is not None:
        seq_len, scale, joint_len, precision = hit
        joint = None if joint_q is None else (joint_q, joint_k, joint_v, joint_len)
        return AttentionArgs(q, k, v, seq_len, scale, joint, precision)
    args = _prepare_checked(op, group, sp_world, q, k, v, seq_len, scale, joint_q, joint_k, joint_v,
                            joint_len, extra, precision)
    if key is not None:
        if len(_passed) >= _MAX_PASSED:  # bounded: a server that sees ever new shapes
            _passed.clear()
        _passed[key] = (args.seq_len, args.scale, args.joint[3] if args.joint else None, args.precision)
    return args


def _prepare_checked(op, group, sp_world, q, k, v, seq_len, scale, joint_q, joint_k, joint_v, joint_len, extra,
                     precision):
    error, args = None, None
    try:
        _check_qkv(q, k, v, scale)
        seq_len = check_seq_len(seq_len, q.shape[1], sp_world)
        joint = _check_joint(q, joint_q, joint_k, joint_v, joint_len)
        mode = rk.check_precision(precision, q)
        args = AttentionArgs(q, k, v, seq_len, None if scale is None else float(scale), joint, mode)
    except (TypeError, ValueError) as exc:
        error = exc
    fields = {
        "q": describe(q), "k": describe(k), "v": describe(v), "seq_len": seq_len, "scale": scale,
        "joint_q": describe(joint_q), "joint_k": describe(joint_k), "joint_v": describe(joint_v),
        "joint_len": args.joint[3] if args is not None and args.joint else joint_len,
        "precision": args.precision if args is not None else precision, **(extra or {}),
    }
    agree(group, op, fields, error)
    return args
