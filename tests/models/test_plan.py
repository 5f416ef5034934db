"""The plans: what each model's plan splits (derived from diffusers' _cp_plan, text entries
dropped), Split's rules, and the adapter's refusals of a plan that does not fit its model."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import ringsp  # noqa: E402
from ringsp.models.adapter import SPAdapter  # noqa: E402
from ringsp.models.plan import OUTPUT, Attention, Gather, SPPlan, Split, image_side  # noqa: E402

from . import wan_cases  # noqa: E402
from .sp_check import offline_ctx  # noqa: E402


def test_each_plan_splits_the_image_side_only():
    from ringsp.models.flux import FluxSPAdapter
    from ringsp.models.ltx import LTXSPAdapter
    from ringsp.models.qwen import QwenSPAdapter
    from ringsp.models.wan import WanSPAdapter

    WAN_PLAN, QWEN_PLAN, FLUX_PLAN, LTX_PLAN = (a.make_plan() for a in (WanSPAdapter, QwenSPAdapter, FluxSPAdapter,
                                                                 LTXSPAdapter))

    wan = dict(WAN_PLAN.shards)
    assert callable(wan.pop("patch_embedding")[OUTPUT])  # moved off blocks.0, where diffusers splits
    assert wan == {"rope": {0: Split(1, 4), 1: Split(1, 4)}, "": {"timestep": Split(1, 2)}, "proj_out": Gather(1)}
    assert QWEN_PLAN.shards == {
        "transformer_blocks.*": {"modulate_index": Split(1, 2)},  # its text mask entry dropped
        "pos_embed": {0: Split(0, 2)},                            # the text table (1) stays whole
        "proj_out": Gather(1), "img_in": {"input": Split(1)}, "": {"controlnet_block_samples": Split(1)}}
    assert FLUX_PLAN.shards == {
        "": {"hidden_states": Split(1, 3), "img_ids": Split(0, 2), "controlnet_block_samples": Split(1),
             "controlnet_single_block_samples": Split(1)},        # encoder_hidden_states, txt_ids dropped
        "proj_out": Gather(1)}
    assert LTX_PLAN.shards == {
        "": {"hidden_states": Split(1, 3), "timestep": Split(1, 2)},  # its text and mask dropped
        "rope": {0: Split(1, 3), 1: Split(1, 3)}, "proj_out": Gather(1)}
    kinds = {plan.name: {p: a.kind for p, a in plan.attention.items()}
             for plan in (WAN_PLAN, QWEN_PLAN, FLUX_PLAN, LTX_PLAN)}
    assert kinds == {"Wan": {"blocks.*.attn1": "self", "blocks.*.attn2": "cross"},
                     "Qwen-Image": {"transformer_blocks.*.attn": "joint"},
                     "Flux": {"transformer_blocks.*.attn": "joint", "single_transformer_blocks.*.attn": "prefix"},
                     "LTX-Video": {"transformer_blocks.*.attn1": "self", "transformer_blocks.*.attn2": "cross"}}


def test_image_side_refuses_what_it_cannot_follow():
    from diffusers.models._modeling_parallel import ContextParallelInput

    cp = {"rope": {0: ContextParallelInput(split_dim=1, split_output=True)}}
    with pytest.raises(KeyError, match="blocks.0"):
        image_side(cp, replace={"blocks.0": {}})
    with pytest.raises(NotImplementedError, match="rope"):
        image_side({"rope": {"x": ContextParallelInput(split_dim=1, split_output=True)}})


def test_split_follows_diffusers_rules():
    ctx = offline_ctx()
    x = torch.arange(6.0).view(1, 6)
    assert Split(1, expected_dims=3)(x, ctx) is x  # another number of dims: left whole
    assert Split(1)(None, ctx) is None
    assert [t.shape for t in Split(1)([x, x], ctx)] == [(1, 6), (1, 6)]  # a world of one keeps everything


def test_the_adapter_refuses_a_plan_that_does_not_fit_the_model():
    model = wan_cases.tiny_model("tiny-t2v")
    check = lambda adapter, args: None  # noqa: E731

    class Missing(SPAdapter):
        make_plan = staticmethod(lambda: SPPlan("Wan", check, {"no_such_module": {"x": Split(1)}}, {}))

    class BadKind(SPAdapter):
        make_plan = staticmethod(lambda: SPPlan("Wan", check, {}, {"blocks.*.attn1": Attention("sideways")}))

    with pytest.raises(ValueError, match="no module 'no_such_module'"):
        Missing(model, offline_ctx())
    with pytest.raises(ValueError, match="attention kind"):
        BadKind(model, offline_ctx())
    assert type(model.blocks[0].attn1.processor).__name__ == "WanAttnProcessor"  # nothing left installed


def test_an_unsupported_transformer_is_named_with_the_supported_classes():
    model = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                  block_out_channels=(8,), down_block_types=("DownBlock2D",),
                                  up_block_types=("UpBlock2D",), norm_num_groups=4)
    with pytest.raises(TypeError) as info:
        ringsp.enable_sequence_parallel(model, offline_ctx())
    message = str(info.value)
    assert "\n" not in message and "UNet2DModel" in message
    for cls in ("WanTransformer3DModel", "QwenImageTransformer2DModel", "FluxTransformer2DModel",
                "LTXVideoTransformer3DModel"):
        assert cls in message
