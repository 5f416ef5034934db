"""Argument checks shared by every backend: bad input fails here, naming the argument,
before any kernel runs.

Ring steps call these on every step, so each check first tries one cheap expression that
holds for valid CUDA input (~1-2 us); only when it fails do the detailed checks run, which
name the argument that is wrong.
"""
import torch

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256
_F32 = torch.float32


def _check_4d(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be [B, S, H, D], got shape {tuple(t.shape)}")


def _qkv_ok(q, k, v, scale, kv_len):
    """True for a valid call on one CUDA device (False means: run the detailed checks)."""
    try:
        qs, ks, dev = q.shape, k.shape, q.get_device()
        return (q.is_cuda and k.is_cuda and v.is_cuda and k.get_device() == dev and v.get_device() == dev
                and len(qs) == 4 and len(ks) == 4 and ks == v.shape
                and qs[0] == ks[0] and qs[2] == ks[2] and qs[3] == ks[3] and 0 < qs[3] <= MAX_HEAD_DIM
                and q.dtype in DTYPES and k.dtype == q.dtype and v.dtype == q.dtype
                and (scale is None or type(scale) is float or type(scale) is int)
                and (kv_len is None or (type(kv_len) is int and 0 <= kv_len <= ks[1])))
    except (AttributeError, TypeError):
        return False


def check_qkv(q, k, v, scale=None, kv_len=None, names=("q", "k", "v")):
    """Validates an attention call; returns kv_len as an int (k's length when None).
    `names` are the arguments' names in the caller's API (for its error messages)."""
    if _qkv_ok(q, k, v, scale, kv_len):
        return k.shape[1] if kv_len is None else kv_len
    qn, kn, vn = names
    for name, t in zip(names, (q, k, v)):
        _check_4d(name, t)
    if q.dtype not in DTYPES:
        raise TypeError(f"{qn} has dtype {q.dtype}; supported: float16, bfloat16, float32")
    for name, t in ((kn, k), (vn, v)):
        check_like(name, t, q, qn)
    if k.shape != v.shape:
        raise ValueError(f"{kn} {tuple(k.shape)} and {vn} {tuple(v.shape)} must have the same shape")
    for dim, what in ((0, "batch"), (2, "heads"), (3, "head dim")):
        if k.shape[dim] != q.shape[dim]:
            raise ValueError(f"{kn} has {what} {k.shape[dim]} but {qn} has {q.shape[dim]}")
    head_dim = q.shape[3]
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head dim {head_dim} is not supported (1..{MAX_HEAD_DIM})")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    return check_kv_len(kv_len, k.shape[1])


def check_like(name, t, like, like_name="q"):
    """t must be a 4-D tensor of `like`'s dtype on `like`'s device."""
    _check_4d(name, t)
    if t.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {like_name} has {like.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but {like_name} is on {like.device}")


def check_kv_len(kv_len, num_keys):
    if kv_len is None:
        return num_keys
    if isinstance(kv_len, bool) or not isinstance(kv_len, int):
        raise TypeError(f"kv_len must be an int or None, got {type(kv_len).__name__}")
    if not 0 <= kv_len <= num_keys:
        raise ValueError(f"kv_len={kv_len} is out of range [0, {num_keys}] (k has {num_keys} keys)")
    return kv_len


def _state_ok(q, acc, lse):
    try:
        qs, dev = q.shape, q.get_device()
        return (acc.dtype == _F32 and lse.dtype == _F32 and acc.shape == qs and len(qs) == 4
                and lse.shape == (qs[0], qs[2], qs[1]) and q.is_cuda and acc.is_cuda and lse.is_cuda
                and acc.get_device() == dev and lse.get_device() == dev)
    except (AttributeError, TypeError):
        return False


def check_state(q, acc, lse, q_name="q"):
    """The running state must be float32 acc [B, S, H, D] and lse [B, H, S] on q's device."""
    if _state_ok(q, acc, lse):
        return
    for name, t in (("acc", acc), ("lse", lse)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but {q_name} is on {q.device}")
    if acc.shape != q.shape:
        raise ValueError(f"acc has shape {tuple(acc.shape)}, expected {q_name}'s shape {tuple(q.shape)}")
    expected = (q.shape[0], q.shape[2], q.shape[1])
    if tuple(lse.shape) != expected:
        raise ValueError(f"lse has shape {tuple(lse.shape)}, expected [B, H, S] = {expected}")


def check_merge(acc, lse, out_blk, lse_blk):
    _check_4d("out_blk", out_blk)
    if out_blk.dtype not in DTYPES:
        raise TypeError(f"out_blk has dtype {out_blk.dtype}; supported: float16, bfloat16, float32")
    check_state(out_blk, acc, lse, q_name="out_blk")
    if not isinstance(lse_blk, torch.Tensor):
        raise TypeError(f"lse_blk must be a torch.Tensor, got {type(lse_blk).__name__}")
    if lse_blk.dtype != torch.float32:
        raise TypeError(f"lse_blk must be float32, got {lse_blk.dtype}")
    if lse_blk.shape != lse.shape:
        raise ValueError(f"lse_blk has shape {tuple(lse_blk.shape)}, expected lse's {tuple(lse.shape)}")
    if lse_blk.device != acc.device:
        raise ValueError(f"lse_blk is on {lse_blk.device} but acc is on {acc.device}")


def default_scale(q, scale):
    return float(scale) if scale is not None else q.shape[-1] ** -0.5
