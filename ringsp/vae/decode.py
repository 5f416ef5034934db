"""parallel_vae_decode: the result of `vae.decode(latents).sample`, computed by the ranks of a
process group, each decoding a balanced slab of latent rows (see docs/vae.md)."""
import contextlib

import torch
import torch.distributed as dist

from ringsp.parallel.agreement import Checksum, agree, dtype_name
from ringsp.parallel.gather import all_gather_cat, broadcast_from_first, gather_cat

from .families import family_of, output_size
from .halo import check_group
from .patching import min_rows_per_rank, plan_patches, row_sharded
from .rows import RowShard, split_rows

__all__ = ["parallel_vae_decode", "DEFAULT_MIN_PARALLEL_PIXELS"]

# Below this many output pixels x frames (batch x frames x height x width) one rank decodes
# and the others wait: halo exchanges and the final gather cost more than they save.
# PLACEHOLDER (about one 1024x1024 image), not yet measured: ringsp_bench.vae_decode measures the
# crossover on the target GPUs, and this value should be replaced by what it finds.
DEFAULT_MIN_PARALLEL_PIXELS = 1024 * 1024

_OUTPUTS = ("all", "rank0")


def parallel_vae_decode(vae, latents, group=None, output="all", *, min_parallel_pixels=None):
    """Decodes latents [B, z_dim, T, H, W] with every rank of `group`.

    group: a torch.distributed ProcessGroup, or None for the default (WORLD) group; None
    without torch.distributed initialised is the plain single-process decode.

    Every rank passes the same vae (same weights) and the same latents. Returns the decoded
    tensor on every rank (output="all") or on the group's first rank only ("rank0"; the
    others get None). Decodes below `min_parallel_pixels` output pixels x frames (default
    DEFAULT_MIN_PARALLEL_PIXELS; 0 forces the parallel path) run on the first rank alone.
    Tiling set on the vae is ignored: the result is always the exact untiled decode.
    Bad or mismatched input raises on every rank before any decoding collective: the rank
    whose input is bad its own TypeError/ValueError, the others a ValueError naming it.
    """
    if group is None and not dist.is_initialized():
        world = 1
    else:
        check_group(group, "parallel_vae_decode")
        world = dist.get_world_size(group)
    if world == 1:
        _validate(vae, latents, output, min_parallel_pixels)
        return _decode_whole(vae, latents)

    plan, threshold = _agreed_inputs(vae, latents, group, output, min_parallel_pixels)
    frames, height, width = output_size(vae, latents.shape)
    if latents.shape[0] * frames * height * width < threshold:
        return _decode_on_first(vae, latents, group, output)
    need = min_rows_per_rank(plan)
    if latents.shape[3] < need * world:
        # Same shapes on every rank (agreed above), so every rank raises this together.
        raise ValueError(
            f"latents have {latents.shape[3]} rows but a group of {world} ranks needs at least {need * world}: "
            f"each rank must hold >= {need} latent row(s) so that the {need}-row halo of every 3x3 conv comes "
            f"from its direct neighbour; use at most {latents.shape[3] // need} ranks"
        )
    return _decode_rows(vae, latents, group, output, plan)


def _agreed_inputs(vae, latents, group, output, min_parallel_pixels):
    """Local checks, then the all-ranks fingerprint check; returns (patch plan, threshold)."""
    try:
        plan, threshold = _validate(vae, latents, output, min_parallel_pixels)
        fields, local_error = _fingerprint(vae, latents, output, threshold), None
    except Exception as exc:  # noqa: BLE001 - any local failure is shared, then re-raised here
        plan = threshold = None
        fields, local_error = {}, exc
    # Never cached: the latents (hence the checksums) are new in every call.
    agree(group, "parallel_vae_decode", fields, local_error, cache=False)
    return plan, threshold


def _decode_rows(vae, latents, group, output, plan):
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    bounds = split_rows(latents.shape[3], world)
    shard = RowShard(group, rank, world, tuple(stop - start for start, stop in bounds))
    start, stop = bounds[rank]
    with row_sharded(plan, shard):
        local = _decode_whole(vae, latents[:, :, :, start:stop, :])
    rows = shard.rows_at(local.shape[3])
    if output == "all":
        return all_gather_cat(local, group, 3, sizes=rows)
    return gather_cat(local, group, 3, sizes=rows)


def _decode_on_first(vae, latents, group, output):
    first = dist.get_rank(group) == 0
    if output == "rank0":  # nobody waits for the first rank
        return _decode_whole(vae, latents) if first else None
    decoded = error = None
    if first:
        try:
            decoded = _decode_whole(vae, latents)
        except Exception as exc:  # noqa: BLE001 - the waiting ranks learn of it, then it is re-raised
            error = exc
    # The latents' device type is agreed (fingerprint), so every rank picks the same kind.
    return broadcast_from_first(decoded, group, latents.device, error)


def _decode_whole(vae, latents):
    with torch.no_grad(), _tiling_off(vae):
        return vae.decode(latents).sample


@contextlib.contextmanager
def _tiling_off(vae):
    # Tiled decoding blends overlapping tiles; the parallel path is the exact untiled
    # decode, and the single-rank path must give the same result.
    saved = vae.use_tiling
    vae.use_tiling = False
    try:
        yield
    finally:
        vae.use_tiling = saved


def _validate(vae, latents, output, min_parallel_pixels):
    """Local checks; returns (patch plan, threshold). Raises TypeError/ValueError."""
    family = family_of(vae)
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if latents.dim() != 5:
        raise ValueError(f"latents must be [B, C, T, H, W], got shape {tuple(latents.shape)}")
    if not latents.is_floating_point():
        raise TypeError(f"latents must be a floating-point tensor, got {dtype_name(latents.dtype)}")
    z_dim = vae.config.z_dim
    if latents.shape[1] != z_dim:
        raise ValueError(f"latents have {latents.shape[1]} channels but the VAE's z_dim is {z_dim}")
    if min(latents.shape) < 1:
        raise ValueError(f"latents must not be empty, got shape {tuple(latents.shape)}")
    weight = next(vae.decoder.parameters())
    if latents.device != weight.device:
        raise ValueError(f"latents are on {latents.device} but the VAE decoder is on {weight.device}")
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
    threshold = DEFAULT_MIN_PARALLEL_PIXELS if min_parallel_pixels is None else min_parallel_pixels
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise ValueError(f"min_parallel_pixels must be a non-negative int or None, got {min_parallel_pixels!r}")
    return plan_patches(vae.decoder, family), threshold


def _fingerprint(vae, latents, output, threshold):
    flat = latents.detach().flatten().to(torch.float64)
    weights = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
    params = torch.stack([p.detach().sum(dtype=torch.float64) for p in vae.decoder.parameters()])
    return {
        "latents shape": list(latents.shape),
        "latents dtype": dtype_name(latents.dtype),
        "latents device": latents.device.type,
        "VAE class": type(vae).__name__,
        "VAE config": _public_config(vae),
        "output": output,
        "min_parallel_pixels": threshold,
        # Checksums: catch ranks with differently seeded weights or latents.
        "VAE decoder weights (checksum)": Checksum([params.sum().item()]),
        "latents values (checksum)": Checksum([flat.sum().item(), (flat * weights).sum().item()]),
    }


def _public_config(vae):
    # Private keys ("_use_default_values", "_name_or_path", ...) are bookkeeping, some of it
    # in set order that differs between processes.
    return {k: v for k, v in vae.config.items() if not k.startswith("_")}
