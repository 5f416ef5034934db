"""Which decoder layers get a row-sharded forward, what is refused, and that the original
forwards come back."""
import pytest
import torch
import torch.nn as nn

from ringsp.vae.families import family_of
from ringsp.vae.patching import min_rows_per_rank, plan_patches, row_sharded
from ringsp.vae.sharded_layers import attention_forward, causal_conv3d_forward, conv2d_forward
from tests.vae.tiny import KINDS, build_vae


def _expected_counts(vae, family):
    convs3d = sum(isinstance(m, family.causal_conv) and m.kernel_size[1] > 1 for m in vae.decoder.modules())
    convs2d = sum(type(m) is nn.Conv2d and m.kernel_size[0] > 1 for m in vae.decoder.modules())
    attentions = sum(isinstance(m, family.attention) for m in vae.decoder.modules())
    return convs3d, convs2d, attentions


@pytest.mark.parametrize("kind", KINDS)
def test_every_spatial_layer_is_planned(kind):
    vae = build_vae(kind)
    family = family_of(vae)
    plan = plan_patches(vae.decoder, family)
    by_forward = {f: sum(entry[1] is f for entry in plan) for f in (causal_conv3d_forward, conv2d_forward, attention_forward)}
    convs3d, convs2d, attentions = _expected_counts(vae, family)
    assert convs3d > 10 and convs2d == 3 and attentions == 1  # the decoder has what we think
    assert (by_forward[causal_conv3d_forward], by_forward[conv2d_forward], by_forward[attention_forward]) == (
        convs3d, convs2d, attentions)
    assert len(plan) == convs3d + convs2d + attentions  # 1x1 convs and per-pixel layers are left alone
    assert min_rows_per_rank(plan) == 1


def test_unknown_row_mixing_layer_is_refused():
    vae = build_vae("wan21")
    vae.decoder.norm_out = nn.GroupNorm(2, vae.decoder.norm_out.gamma.shape[0])
    with pytest.raises(TypeError, match=r"decoder\.norm_out \(GroupNorm\)"):
        plan_patches(vae.decoder, family_of(vae))


def test_strided_conv_is_refused():
    vae = build_vae("qwenimage")
    conv = vae.decoder.up_blocks[0].upsamplers[0].resample[1]
    conv.stride = (2, 1)
    with pytest.raises(TypeError, match="stride 1 along height"):
        plan_patches(vae.decoder, family_of(vae))


def test_bilinear_upsample_is_refused():
    vae = build_vae("wan21")
    vae.decoder.up_blocks[0].upsamplers[0].resample[0].mode = "bilinear"
    with pytest.raises(TypeError, match="nearest"):
        plan_patches(vae.decoder, family_of(vae))


def test_forwards_are_restored_even_after_an_error():
    vae = build_vae("wan21")
    plan = plan_patches(vae.decoder, family_of(vae))
    marked = plan[0][0]
    sentinel = lambda *a, **k: "sentinel"  # noqa: E731 - stands in for an accelerate hook
    marked.forward = sentinel
    with pytest.raises(RuntimeError, match="inside"):
        with row_sharded(plan, shard=None):
            assert all("forward" in m.__dict__ for m, _, _ in plan)
            assert marked.forward is not sentinel
            raise RuntimeError("inside")
    assert marked.forward is sentinel
    assert all("forward" not in m.__dict__ for m, _, _ in plan[1:])
    del marked.forward
    z = torch.randn(1, 16, 1, 2, 2)
    with torch.no_grad():
        assert vae.decode(z).sample.shape == (1, 3, 1, 16, 16)  # the plain decoder works again
