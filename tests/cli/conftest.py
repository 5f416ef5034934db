"""Fixtures of the CLI tests: a tiny Wan pipeline built here from diffusers' classes (its own
configs, not tiny-wan's) and saved with save_pretrained, as a user's --model-path would be."""
import pytest
import torch

# Non-square, uneven token counts: 48 x 80 pixels, 9 frames -> 3 x 5 patches x 3 latent frames
# = 45 tokens (uneven over 2 ranks); 2 heads (padded by Ulysses over 3 ranks).
SIZE = {"height": 48, "width": 80, "num_frames": 9}


def build_test_pipeline(seed=7):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from ringsp.models.pipelines import byte_tokenizer

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32)
    vae = AutoencoderKLWan(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True],
                           latents_mean=[0.2, -0.1, 0.0, 0.3], latents_std=[1.1, 0.9, 1.3, 0.7])
    tokenizer = byte_tokenizer(64)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, num_heads=2, d_ff=24, num_layers=1,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, is_encoder_decoder=False))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(), scheduler=scheduler,
                       transformer=transformer.eval())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-wan-dir")
    build_test_pipeline().save_pretrained(str(path))
    return str(path)


# ------------------------------------------------------------------------------ Qwen-Image
# Qwen: 2 heads (Ulysses over 3 ranks pads them), 48 x 80 pixels -> 3 x 5 = 15 packed tokens
# (uneven over 2 ranks); the edit input image is resized to about 48 x 48 pixels.
QWEN_SIZE = {"height": 48, "width": 80}
QWEN_IMAGE_AREA = 48 * 48


def build_qwen_test_pipeline(edit, seed=7):
    """A tiny QwenImagePipeline / QwenImageEditPipeline from diffusers' classes with its own
    configs, and ringsp's offline tokenizer, text encoder config and processor."""
    from diffusers import (
        AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline, QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLForConditionalGeneration

    from ringsp.models.pipelines.qwen import template_corpus
    from ringsp.models.pipelines.qwen_text import (
        QwenImageTextProcessor, image_processor, qwen_tokenizer, text_encoder_config,
    )

    torch.manual_seed(seed)
    tokenizer = qwen_tokenizer(template_corpus())
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=[4, 6, 6])
    vae = AutoencoderKLQwenImage(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True],
                                 latents_mean=[0.2, -0.1, 0.0, 0.3], latents_std=[1.1, 0.9, 1.3, 0.7])
    text_encoder = Qwen2_5_VLForConditionalGeneration(text_encoder_config(tokenizer, 16, "tiny"))
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
        max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential")
    parts = dict(scheduler=scheduler, vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                 transformer=transformer.eval())
    if edit:
        return QwenImageEditPipeline(processor=QwenImageTextProcessor(image_processor(), tokenizer), **parts)
    return QwenImagePipeline(**parts)


def write_test_image(path, size=(72, 40), seed=0):
    """A random RGB PNG of size (width, height)."""
    import numpy as np
    import PIL.Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture(scope="session")
def qwen_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen-dir")
    build_qwen_test_pipeline(edit=False).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="session")
def qwen_edit_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen-edit-dir")
    build_qwen_test_pipeline(edit=True).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="session")
def input_image(tmp_path_factory):
    return write_test_image(tmp_path_factory.mktemp("images") / "input.png")


# ------------------------------------------------------------------------------ FLUX.1, LTX-Video
# ringsp's own tiny pipelines, saved as a user's --model-path would be. tiny-flux: 48 x 80 pixels
# -> 3 x 5 = 15 packed tokens; tiny-ltx-video: 96 x 160 pixels x 17 frames -> 3 x 5 x 3 = 45 tokens
# (uneven on 2 and 4 ranks). Both have 3 heads (Ulysses 2 and 4 pad them).
@pytest.fixture(scope="session")
def flux_model_dir(tmp_path_factory):
    from ringsp.models.pipelines import build_dummy_pipeline

    path = tmp_path_factory.mktemp("tiny-flux-dir")
    build_dummy_pipeline("tiny-flux", seed=7)[0].save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="session")
def ltx_model_dir(tmp_path_factory):
    from ringsp.models.pipelines import build_dummy_pipeline

    path = tmp_path_factory.mktemp("tiny-ltx-dir")
    build_dummy_pipeline("tiny-ltx-video", seed=7)[0].save_pretrained(str(path))
    return str(path)
