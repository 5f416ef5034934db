"""The online-softmax merge on NPU: the AscendC fused kernel (csrc/ascend/) where it was
built and the shapes fit it, otherwise the same arithmetic as torch tensor ops.

Both paths use one branch-free formulation (`merge_weights`): the vector unit has no cheap
per-element branch, so -inf is clamped to a finite NEG_BIG and "has this side seen a key"
becomes a 0/1 factor. The AscendC kernel performs these steps op for op; the fallback runs
them as torch ops, which is how the CPU tests check the kernel's arithmetic.

Pure logic: the kernel op is passed in, so the host-side preparation (row layout, padding,
tiling) is testable on CPU against an emulation of the kernel.
"""
from dataclasses import astuple, dataclass

import torch

NEG_BIG = -1e30  # finite stand-in for -inf: keeps inf - inf (NaN) out of the arithmetic

# Mirrors of csrc/ascend/merge_tiling.h (a test checks they agree).
ROW_ALIGN = 8  # fp32 lse values per 32-byte UB block: row ranges and tiles are multiples
UB_BUDGET = 160 * 1024  # of the 192 KiB UB of an Atlas A2 vector core, with headroom
BUFFER_NUM = 2  # double-buffered queues
ROW_VECTORS = 6  # per-row float32 work vectors in the kernel
MAX_TILE_ROWS = 256  # bounds the per-row scalar loop of one tile
KERNEL_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # RingspMergeDtype


def merge_weights(lse, lse_blk):
    """(w_acc, w_blk, new_lse) with acc <- w_acc * acc + w_blk * out_blk, elementwise over
    any matching shapes. A side with lse -inf gets weight exactly 0; a row neither side has
    seen keeps acc (w_acc 1, w_blk 0) and gets new_lse exactly NEG_BIG, which
    restore_neg_inf_ turns back into -inf (so nothing depends on log(0) on the device)."""
    la = torch.clamp_min(lse, NEG_BIG)
    lb = torch.clamp_min(lse_blk, NEG_BIG)
    seen_a = torch.clamp_max(la - NEG_BIG, 1.0)  # 0 at NEG_BIG, 1 for any real lse
    seen_b = torch.clamp_max(lb - NEG_BIG, 1.0)
    mx = torch.maximum(la, lb)
    ea = torch.exp(la - mx) * seen_a
    eb = torch.exp(lb - mx) * seen_b
    keep = 1.0 - torch.maximum(seen_a, seen_b)
    total = ea + eb + keep  # >= 1: the larger side contributes exp(0), or keep is 1
    new_lse = mx + torch.log(total)
    return ea / total + keep, eb / total, new_lse


def restore_neg_inf_(lse):
    """NEG_BIG (a row that has seen no key) back to the contract's -inf, in place."""
    return lse.masked_fill_(lse <= NEG_BIG, float("-inf"))


def _per_row(w):
    return w.transpose(1, 2).unsqueeze(-1)  # [B, H, S] weights -> [B, S, H, 1]


def merge_tensor_ops_(acc, lse, out_blk, lse_blk):
    """The fallback: merge_weights with torch ops, in place on any strides."""
    w_acc, w_blk, new_lse = merge_weights(lse, lse_blk)
    acc.mul_(_per_row(w_acc)).add_(out_blk.to(torch.float32) * _per_row(w_blk))
    restore_neg_inf_(lse.copy_(new_lse))


@dataclass(frozen=True)
class MergeTiling:
    """The kernel's work split (RingspMergeTiling): rows are (b, s, h) in acc's order; core c
    takes rows [c * rows_per_core, ...) in tiles of tile_rows."""

    total_rows: int
    head_dim: int
    tile_rows: int
    rows_per_core: int
    used_cores: int

    def as_list(self):
        return list(astuple(self))


def align_rows(n):
    return -(-n // ROW_ALIGN) * ROW_ALIGN


def ub_bytes(tile_rows, head_dim, out_elem_size):
    """UB the kernel allocates for one tile size (matches its InitBuffer calls)."""
    cast = 4 if out_elem_size != 4 else 0  # a float32 copy of out_blk when it is 16-bit
    per_row = head_dim * (BUFFER_NUM * (4 + out_elem_size + 4) + cast) + 4 * (BUFFER_NUM * 3 + ROW_VECTORS)
    return tile_rows * per_row


def merge_tiling(total_rows, head_dim, out_elem_size, num_cores, ub_budget=None):
    """The largest tile that fits the UB budget, rows spread evenly over the cores in
    ROW_ALIGN multiples; None when not even ROW_ALIGN rows fit."""
    budget = UB_BUDGET if ub_budget is None else ub_budget
    fit = budget // ub_bytes(1, head_dim, out_elem_size)
    tile_rows = min(MAX_TILE_ROWS, fit) // ROW_ALIGN * ROW_ALIGN
    if tile_rows == 0 or total_rows == 0:
        return None
    rows_per_core = align_rows(-(-total_rows // max(1, num_cores)))
    used_cores = -(-total_rows // rows_per_core)
    return MergeTiling(total_rows, head_dim, min(tile_rows, rows_per_core), rows_per_core, used_cores)


def kernel_unfit_reason(head_dim, out_dtype):
    """Why the AscendC kernel cannot take this merge (None when it can): DataCopy moves
    whole 32-byte blocks, so every acc and out_blk row must be a multiple of 32 bytes."""
    if out_dtype not in KERNEL_DTYPES:
        return f"out_blk dtype {out_dtype} has no kernel"
    for what, size in (("acc", 4), ("out_blk", torch.empty((), dtype=out_dtype).element_size())):
        if head_dim * size % 32:
            return f"a {what} row of head dim {head_dim} is {head_dim * size} bytes, not a multiple of 32"
    return None


def choose(kernel, acc, out_blk, num_cores, ub_budget=None):
    """("ascendc", tiling) or ("tensor-ops", reason): the dispatch decision, pure."""
    if kernel is None:
        return "tensor-ops", "the AscendC library is not built or not loaded"
    B, S, H, D = acc.shape
    reason = kernel_unfit_reason(D, out_blk.dtype)
    if reason is not None:
        return "tensor-ops", reason
    tiling = merge_tiling(B * S * H, D, out_blk.element_size(), num_cores, ub_budget)
    if tiling is None:
        return "tensor-ops", f"head dim {D} leaves no room for {ROW_ALIGN} rows in UB"
    return "ascendc", tiling


def rows_of(lse, padded_len):
    """[B, H, S] lse as a flat float32 vector in acc's row order (b, s, h), padded with -inf
    to padded_len: the kernel reads lse in whole 32-byte blocks, contiguous per tile."""
    B, H, S = lse.shape
    rows = B * S * H
    flat = torch.empty(padded_len, dtype=torch.float32, device=lse.device)
    flat[rows:].fill_(float("-inf"))
    flat[:rows].view(B, S, H).copy_(lse.permute(0, 2, 1))
    return flat


def merge_with_kernel_(kernel, acc, lse, out_blk, lse_blk, tiling):
    """Prepares contiguous row-major operands, runs the kernel op, writes the state back."""
    B, S, H, _ = acc.shape
    padded = align_rows(tiling.total_rows)
    work = acc if acc.is_contiguous() else acc.contiguous()
    lse_rows, lse_blk_rows = rows_of(lse, padded), rows_of(lse_blk, padded)
    kernel(work, lse_rows, out_blk.contiguous(), lse_blk_rows, tiling.as_list())
    restore_neg_inf_(lse.copy_(lse_rows[: tiling.total_rows].view(B, S, H).permute(0, 2, 1)))
    if work is not acc:
        acc.copy_(work)


def merge_(acc, lse, out_blk, lse_blk, kernel=None, num_cores=1, ub_budget=None):
    """Merges (out_blk, lse_blk) into (acc, lse) in place; returns (path, detail) saying
    which implementation ran and why ("skipped" for an empty state)."""
    if acc.numel() == 0:
        return "skipped", "empty state"
    path, detail = choose(kernel, acc, out_blk, num_cores, ub_budget)
    if path == "ascendc":
        merge_with_kernel_(kernel, acc, lse, out_blk, lse_blk, detail)
    else:
        merge_tensor_ops_(acc, lse, out_blk, lse_blk)
    return path, detail
