"""parallel_vae_decode on gloo with 2, 3 and 4 ranks: equal to the single-device
vae.decode (fp32, <= 1e-4), each rank's activations shrink with its share of rows, and
bad or mismatched input fails on every rank."""
import pytest
import torch
import torch.distributed as dist

import ringsp
from ringsp.vae.rows import split_rows
from tests.mp_pool import run_distributed
from tests.vae.tiny import build_vae, latents, reference_decode

TOL = 1e-4

# (kind, frames, latent height, latent width, batch) per world size: heights the world does
# not divide, 1 and several latent frames, down to one latent row per rank.
CASES = {
    2: [("wan21", 1, 7, 5, 1), ("wan21", 3, 5, 4, 1), ("wan22", 2, 5, 3, 1), ("qwenimage", 1, 7, 6, 2)],
    3: [("wan21", 2, 7, 4, 1), ("wan22", 1, 4, 3, 1), ("qwenimage", 1, 3, 5, 1)],
    4: [("wan21", 2, 6, 3, 1), ("wan22", 2, 5, 2, 1), ("qwenimage", 1, 9, 4, 1)],
}


class _LargestActivation:
    """Largest output (elements) of any decoder layer while attached."""

    def __init__(self, vae):
        self.largest, self.calls = 0, 0
        self.handles = [m.register_forward_hook(self._seen) for m in vae.decoder.modules() if m is not vae.decoder]

    def _seen(self, module, args, out):
        self.calls += 1
        if isinstance(out, torch.Tensor):
            self.largest = max(self.largest, out.numel())

    def close(self):
        for h in self.handles:
            h.remove()


def _decode_cases(cases, output, min_parallel_pixels):
    """Per case: (output, largest activation) of the parallel decode on this rank, plus
    the single-device reference and its largest activation on rank 0."""
    results = []
    for kind, frames, height, width, batch in cases:
        vae = build_vae(kind)
        z = latents(kind, frames, height, width, batch)
        ref = ref_largest = None
        if dist.get_rank() == 0:
            probe = _LargestActivation(vae)
            ref = reference_decode(vae, z)
            ref_largest = probe.largest
            probe.close()
        probe = _LargestActivation(vae)
        out = ringsp.parallel_vae_decode(vae, z, output=output, min_parallel_pixels=min_parallel_pixels)
        probe.close()
        results.append(dict(out=out, largest=probe.largest, calls=probe.calls, ref=ref, ref_largest=ref_largest))
    return results


def _check_close(out, ref):
    assert out is not None and out.shape == ref.shape and out.dtype == ref.dtype
    assert ref.abs().max() > 0.05  # a real decode, not a degenerate one
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("world", sorted(CASES))
def test_parallel_equals_single_device_and_shrinks_memory(world):
    cases = CASES[world]
    per_rank = run_distributed(world, _decode_cases, cases, "all", 0, timeout=300)
    for i, (kind, frames, height, _, _) in enumerate(cases):
        ref = per_rank[0][i]["ref"]
        ref_largest = per_rank[0][i]["ref_largest"]
        rows = [b - a for a, b in split_rows(height, world)]
        for rank in range(world):
            got = per_rank[rank][i]
            _check_close(got["out"], ref)
            # Every layer's output scales with the rank's share of the latent rows.
            assert got["largest"] * height <= ref_largest * rows[rank], (kind, rank, got["largest"], ref_largest)


def test_output_rank0_only_on_first_rank():
    per_rank = run_distributed(3, _decode_cases, [("wan21", 2, 5, 3, 1)], "rank0", 0, timeout=300)
    _check_close(per_rank[0][0]["out"], per_rank[0][0]["ref"])
    assert per_rank[1][0]["out"] is None and per_rank[2][0]["out"] is None
    assert per_rank[1][0]["calls"] > 0  # the other ranks did decode their rows


@pytest.mark.parametrize("output", ["all", "rank0"])
def test_small_decode_runs_on_first_rank_only(output):
    # Default threshold: these tiny decodes are far below it.
    per_rank = run_distributed(2, _decode_cases, [("qwenimage", 1, 4, 4, 1)], output, None, timeout=300)
    first, second = per_rank[0][0], per_rank[1][0]
    _check_close(first["out"], first["ref"])
    assert first["largest"] == first["ref_largest"]
    assert second["calls"] == 0  # rank 1 ran no decoder layer
    if output == "all":
        assert torch.equal(second["out"], first["out"])
    else:
        assert second["out"] is None


def test_threshold_is_in_output_pixels_times_frames():
    # qwenimage 1 x (4*8) x (4*8) = 1024 output pixels: parallel at 1024, single above it.
    at = run_distributed(2, _decode_cases, [("qwenimage", 1, 4, 4, 1)], "all", 1024, timeout=300)
    above = run_distributed(2, _decode_cases, [("qwenimage", 1, 4, 4, 1)], "all", 1025, timeout=300)
    assert at[1][0]["calls"] > 0 and above[1][0]["calls"] == 0


def _subgroup_decode():
    group = dist.new_group([1, 2])
    if dist.get_rank() == 0:
        return None
    vae = build_vae("wan21")
    z = latents("wan21", 1, 5, 3)
    out = ringsp.parallel_vae_decode(vae, z, group=group, output="rank0", min_parallel_pixels=0)
    return out, reference_decode(vae, z)


def test_subgroup_first_rank_is_group_rank_zero():
    out = run_distributed(3, _subgroup_decode, timeout=300)
    assert out[0] is None
    _check_close(*out[1])
    assert out[2][0] is None


# ----------------------------------------------------------------------------- bad input


def _attempt(vae, z, **kwargs):
    try:
        ringsp.parallel_vae_decode(vae, z, **kwargs)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


def _error_cases():
    rank, world = dist.get_rank(), dist.get_world_size()
    vae = build_vae("wan21")
    z = latents("wan21", 1, 4, 3)
    force = dict(min_parallel_pixels=0)
    out = {
        "channels everywhere": _attempt(vae, torch.randn(1, 8, 1, 4, 3), **force),
        "channels on rank 1": _attempt(vae, torch.randn(1, 8, 1, 4, 3) if rank == 1 else z, **force),
        "too many ranks": _attempt(vae, latents("wan21", 1, world - 1, 3), **force),
        "height differs": _attempt(vae, latents("wan21", 1, 4 + rank, 3), **force),
        "values differ": _attempt(vae, latents("wan21", 1, 4, 3, seed=rank), **force),
        "weights differ": _attempt(build_vae("wan21", seed=rank), z, **force),
        "not a vae": _attempt(torch.nn.Linear(2, 2), z, **force),
        "4-D latents": _attempt(vae, z[:, :, 0], **force),
        "bad output": _attempt(vae, z, output="rank1", **force),
        "bad threshold": _attempt(vae, z, min_parallel_pixels=-1),
    }
    # Nothing was left half-done: the same group decodes correctly afterwards.
    good = ringsp.parallel_vae_decode(vae, z, **force)
    out["afterwards"] = (good - reference_decode(vae, z)).abs().max().item()
    return out


def test_bad_input_fails_on_every_rank():
    per_rank = run_distributed(3, _error_cases, timeout=300)
    expect = {
        "channels everywhere": ("ValueError", "8 channels but the VAE's z_dim is 16"),
        "too many ranks": ("ValueError", "use at most 2 ranks"),
        "height differs": ("ValueError", "  latents shape: rank 0 has (1, 16, 1, 4, 3), rank 1 has (1, 16, 1, 5, 3)"),
        "values differ": ("ValueError", "  latents values (checksum): rank 0 has ("),
        "weights differ": ("ValueError", "  VAE decoder weights (checksum): rank 0 has "),
        "not a vae": ("TypeError", "AutoencoderKLWan or AutoencoderKLQwenImage"),
        "4-D latents": ("ValueError", "[B, C, T, H, W]"),
        "bad output": ("ValueError", "output must be one of"),
        "bad threshold": ("ValueError", "min_parallel_pixels"),
    }
    for rank, out in enumerate(per_rank):
        for case, (kind, text) in expect.items():
            assert out[case][0] == kind and text in out[case][1], (rank, case, out[case])
        kind, message = out["channels on rank 1"]
        assert kind == "ValueError"
        assert ("z_dim is 16" in message) if rank == 1 else ("rank 1 of 3 rejected its arguments" in message)
        assert out["afterwards"] <= TOL


# ----------------------------------------------------------------------------- one process


def test_without_distributed_it_is_the_plain_untiled_decode():
    if dist.is_initialized():
        pytest.skip("this process already has a process group")
    vae = build_vae("wan21")
    z = latents("wan21", 2, 6, 6)
    plain = reference_decode(vae, z)
    vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32,
                      tile_sample_stride_height=16, tile_sample_stride_width=16)
    tiled = reference_decode(vae, z)
    assert (tiled - plain).abs().max() > 1e-3  # tiling really changes this decode
    out = ringsp.parallel_vae_decode(vae, z)
    assert torch.equal(out, plain)
    assert vae.use_tiling  # the caller's setting is back
    with pytest.raises(ValueError, match="z_dim"):
        ringsp.parallel_vae_decode(vae, z[:, :8])
