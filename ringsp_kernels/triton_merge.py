"""Triton kernel that merges a partial attention result (out_blk, lse_blk) into the
running state (acc, lse) in one pass: for paths that cannot fuse the merge into the
attention itself (a vendor kernel that returns out + LSE)."""
import triton
import triton.language as tl


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


def launch_merge(acc, lse, out_blk, lse_blk):
    B, S, H, D = acc.shape
    rows = B * S * H
    if rows == 0:
        return
    out_blk = out_blk if out_blk.stride(3) == 1 else out_blk.contiguous()
    block_d = max(16, triton.next_power_of_2(D))
    block_r = max(1, min(64, 4096 // block_d))
    merge_kernel[(triton.cdiv(rows, block_r),)](
        acc, lse, out_blk, lse_blk, rows, S, H,
        acc.stride(0), acc.stride(1), acc.stride(2),
        out_blk.stride(0), out_blk.stride(1), out_blk.stride(2),
        lse.stride(0), lse.stride(1), lse.stride(2),
        lse_blk.stride(0), lse_blk.stride(1), lse_blk.stride(2),
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_R=block_r,
    )

