"""Triton kernel that merges a partial attention result (out_blk, lse_blk) into the
running state (acc, lse) in one pass: for paths that cannot fuse the merge into the
attention itself (a vendor kernel that returns out + LSE)."""
import torch
import triton
import triton.language as tl

from .. import caches
from .fast_launch import INTERPRET, CachedKernel


@triton.jit
def merge_kernel(
    Acc, Lse, Out, LseBlk,
    rows, S, H,
    stride_ab, stride_as, stride_ah,
    stride_ob, stride_os, stride_oh,
    stride_lb, stride_lh, stride_ls,
    stride_kb, stride_kh, stride_ks,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # row = (b, s, h) flattened
    r_ok = r < rows
    b = r // (S * H)
    s = (r // H) % S
    h = r % H
    d = tl.arange(0, BLOCK_D)
    mask = r_ok[:, None] & (d[None, :] < HEAD_DIM)
    la = tl.load(Lse + b * stride_lb + h * stride_lh + s * stride_ls, mask=r_ok, other=float("-inf"))
    lb = tl.load(LseBlk + b * stride_kb + h * stride_kh + s * stride_ks, mask=r_ok, other=float("-inf"))
    mx = tl.maximum(la, lb)
    any_key = mx > float("-inf")
    mx_safe = tl.where(any_key, mx, 0.0)
    ea = tl.exp(la - mx_safe)  # 0 for a side that has seen no key
    eb = tl.exp(lb - mx_safe)
    total = tl.where(any_key, ea + eb, 1.0)
    acc_ptrs = Acc + (b * stride_ab + s * stride_as + h * stride_ah)[:, None] + d[None, :]
    out_ptrs = Out + (b * stride_ob + s * stride_os + h * stride_oh)[:, None] + d[None, :]
    a = tl.load(acc_ptrs, mask=mask, other=0.0)
    o = tl.load(out_ptrs, mask=mask, other=0.0).to(tl.float32)
    a = tl.where((la > float("-inf"))[:, None], a, 0.0)
    merged = (a * ea[:, None] + o * eb[:, None]) / total[:, None]
    tl.store(acc_ptrs, merged, mask=mask)
    new_lse = tl.where(any_key, mx_safe + tl.log(total), float("-inf"))
    tl.store(Lse + b * stride_lb + h * stride_lh + s * stride_ls, new_lse, mask=r_ok)


_KERNEL = CachedKernel(merge_kernel)
caches.register("triton merge launches", _KERNEL.entries.clear)
_get_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device


def launch_merge(acc, lse, out_blk, lse_blk):
    B, S, H, D = acc.shape
    rows = B * S * H
    if rows == 0:
        return
    out_blk = out_blk if out_blk.stride(3) == 1 else out_blk.contiguous()
    block_d = max(16, 1 << (D - 1).bit_length())
    block_r = max(1, min(64, 4096 // block_d))
    sa, so, sl, sk = acc.stride(), out_blk.stride(), lse.stride(), lse_blk.stride()
    args = (acc, lse, out_blk, lse_blk, rows, S, H, sa[0], sa[1], sa[2], so[0], so[1], so[2],
            sl[0], sl[1], sl[2], sk[0], sk[1], sk[2])
    grid = (-(-rows // block_r), 1, 1)  # ceil, without triton.cdiv (a jit function in Triton 3.9)
    consts = dict(HEAD_DIM=D, BLOCK_D=block_d, BLOCK_R=block_r)
    if INTERPRET:
        merge_kernel[grid](*args, **consts)
        return
    dev = acc.get_device()
    if dev != _get_device():  # Triton launches on the current device
        with torch.cuda.device(dev):
            return launch_merge(acc, lse, out_blk, lse_blk)
    p = (acc.data_ptr(), lse.data_ptr(), out_blk.data_ptr(), lse_blk.data_ptr())
    align = (p[0] | p[1] | p[2] | p[3]) & 15
    if align:  # Triton specialises each pointer on 16-byte alignment
        align = tuple(x % 16 == 0 for x in p)
    key = (dev, out_blk.dtype, B, S, H, D, sa, so, sl, sk, align)
    _KERNEL.launch(key, grid, args, lambda: (consts, {}))
