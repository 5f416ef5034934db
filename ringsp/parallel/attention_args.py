"""Validation of the SP attention arguments, shared by ring, Ulysses and USP.

Checks run locally first; their error (if any) travels in the cross-rank fingerprint (see
agreement.py), so a rank with bad arguments makes every rank raise instead of hanging.
"""
from dataclasses import dataclass

import torch

from ringsp_kernels.checks import DTYPES, MAX_HEAD_DIM

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


def _check_tensor(name, t, like=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be [B, S, H, D], got shape {tuple(t.shape)}")
    if like is None:
        return
    if t.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but q has {like.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but q is on {like.device}")


def _check_qkv(q, k, v):
    _check_tensor("q", q)
    if q.dtype not in DTYPES:
        raise TypeError(f"q has dtype {q.dtype}; supported: float16, bfloat16, float32")
    if not 1 <= q.shape[3] <= MAX_HEAD_DIM:
        raise ValueError(f"head dim {q.shape[3]} is not supported (1..{MAX_HEAD_DIM})")
    if q.shape[1] == 0:
        raise ValueError("q has an empty local sequence (S_local = 0)")
    for name, t in (("k", k), ("v", v)):
        _check_tensor(name, t, q)
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
    for name, t in (("joint_q", joint_q), ("joint_k", joint_k), ("joint_v", joint_v)):
        _check_tensor(name, t, q)
        if t.shape != joint_q.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but joint_q has {tuple(joint_q.shape)}")
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


def prepare(op, group, sp_world, q, k, v, seq_len, scale, joint_q, joint_k, joint_v, joint_len, extra=None):
    """Validates one call's arguments and checks that every rank of `group` agrees on them.
    Returns AttentionArgs; raises on every rank if any rank's arguments are bad or differ."""
    error, args = None, None
    try:
        _check_qkv(q, k, v)
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
            raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
        seq_len = check_seq_len(seq_len, q.shape[1], sp_world)
        joint = _check_joint(q, joint_q, joint_k, joint_v, joint_len)
        args = AttentionArgs(q, k, v, seq_len, None if scale is None else float(scale), joint)
    except (TypeError, ValueError) as exc:
        error = exc
    fields = {
        "q": describe(q), "k": describe(k), "v": describe(v), "seq_len": seq_len, "scale": scale,
        "joint_q": describe(joint_q), "joint_k": describe(joint_k), "joint_v": describe(joint_v),
        "joint_len": args.joint[3] if args is not None and args.joint else joint_len, **(extra or {}),
    }
    agree(group, op, fields, error)
    return args
