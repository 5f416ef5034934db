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
