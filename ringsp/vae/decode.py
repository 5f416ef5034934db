"""parallel_vae_decode: the result of `vae.decode(latents).sample`, computed by the ranks of a
process group, each decoding a balanced slab of latent rows (see docs/vae.md)."""
import contextlib
import hashlib
import json

import torch
import torch.distributed as dist

from .agreement import Field, agree
from .collectives import all_gather_rows, broadcast_from_first, comm_device, gather_rows
from .families import family_of, output_size
from .patching import min_rows_per_rank, plan_patches, row_sharded
from .rows import RowShard, split_rows

__all__ = ["parallel_vae_decode", "DEFAULT_MIN_PARALLEL_PIXELS"]

# Below this many output pixels x frames (batch x frames x height x width) one rank decodes
# and the others wait: halo exchanges and the final gather cost more than they save.
# PLACEHOLDER (about one 1024x1024 image), not yet measured: bench/vae_decode.py measures the
# crossover on the target GPUs, and this value should be replaced by what it finds.
DEFAULT_MIN_PARALLEL_PIXELS = 1024 * 1024

_OUTPUTS = ("all", "rank0")


def parallel_vae_decode(vae, latents, group=None, output="all", *, min_parallel_pixels=None):
    """Decodes latents [B, z_dim, T, H, W] with every rank of `group` (default: the world).

    Every rank passes the same vae (same weights) and the same latents. Returns the decoded
    tensor on every rank (output="all") or on the group's first rank only ("rank0"; the
    others get None). Decodes below `min_parallel_pixels` output pixels x frames (default
    DEFAULT_MIN_PARALLEL_PIXELS; 0 forces the parallel path) run on the first rank alone.
    Tiling set on the vae is ignored: the result is always the exact untiled decode.
    Bad or mismatched input raises on every rank before any decoding collective.
    """
    if group is None and not dist.is_initialized():
        world = 1
    else:
        _check_group(group)
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
    except (TypeError, ValueError) as exc:
        plan = threshold = None
        fields, local_error = [], exc
    agree(group, comm_device(group, latents if local_error is None else None), fields, local_error)
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
        return all_gather_rows(local, rows, group, dim=3)
    return gather_rows(local, rows, group, dim=3)


def _decode_on_first(vae, latents, group, output):
    first = dist.get_rank(group) == 0
    decoded = _decode_whole(vae, latents) if first else None
    if output == "rank0":
        return decoded
    return broadcast_from_first(decoded, group, comm_device(group, latents))


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
        raise TypeError(f"latents must be a floating-point tensor, got {latents.dtype}")
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
    return [
        Field("latents shape", latents.shape),
        Field("latents dtype", [_dtype_code(latents.dtype)]),
        Field("VAE class and config", [_config_hash(vae)]),
        Field("output", [_OUTPUTS.index(output)]),
        Field("min_parallel_pixels", [threshold]),
        # Checksums: catch ranks with differently seeded weights or latents.
        Field("VAE decoder weights (checksum)", [params.sum().item()], rel_tol=1e-7),
        Field("latents values (checksum)", [flat.sum().item(), (flat * weights).sum().item()], rel_tol=1e-7),
    ]


def _dtype_code(dtype):
    codes = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    return codes.index(dtype) if dtype in codes else len(codes)


def _config_hash(vae):
    # Private keys ("_use_default_values", "_name_or_path", ...) are bookkeeping, some of it
    # in set order that differs between processes.
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    text = type(vae).__name__ + json.dumps(config, sort_keys=True, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)  # 48 bits: exact in float64


def _check_group(group):
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"group must be a torch.distributed ProcessGroup or None, got {type(group).__name__}")
    if not dist.is_initialized():
        raise ValueError("a group was given but torch.distributed is not initialised")
    if dist.get_rank(group) < 0:
        raise ValueError("this process is not a member of `group`")
