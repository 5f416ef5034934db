"""Text encoders of the dummy Flux.1 and LTX-Video pipelines, built offline with random weights:
T5-v1.1-XXL's encoder (both) and CLIP ViT-L/14's text tower (Flux's pooled prompt), either as
published (kind "full"), at their real widths with 2 layers ("stand-in": the transformer sees
embeddings of the real shape), or at toy widths ("tiny"). Token ids are byte_tokenizer's
(<pad> = 0, </s> = 1): the tokenizers are byte-level stand-ins too."""

# google/t5-v1_1-xxl's encoder (FLUX.1's text_encoder_2, LTX-Video's text_encoder)
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
          "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}
# openai/clip-vit-large-patch14's text model (FLUX.1's text_encoder)
CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "projection_dim": 768}
KINDS = ("full", "stand-in", "tiny")
STAND_IN_LAYERS = 2


def _kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def t5_encoder(width, vocab_size, kind):
    """A random T5EncoderModel whose embeddings are `width` wide."""
    from transformers import T5Config, T5EncoderModel

    dims = dict(T5_XXL)
    if _kind(kind) == "tiny":
        dims = {"d_model": width, "d_kv": 8, "num_heads": max(1, width // 8), "d_ff": 32, "num_layers": 2,
                "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16}
    elif width != T5_XXL["d_model"]:
        raise ValueError(f"T5-v1.1-XXL makes {T5_XXL['d_model']}-wide embeddings, but the transformer takes {width}")
    if kind != "full":
        dims.update(vocab_size=vocab_size, num_layers=min(dims["num_layers"], STAND_IN_LAYERS))
    config = T5Config(**dims, feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def clip_text_encoder(width, vocab_size, kind, max_length=77):
    """A random CLIPTextModel whose pooled output is `width` wide; it pools at the first </s>."""
    from transformers import CLIPTextConfig, CLIPTextModel

    dims = dict(CLIP_L)
    if _kind(kind) == "tiny":
        dims = {"hidden_size": width, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "projection_dim": width}
    elif width != CLIP_L["hidden_size"]:
        raise ValueError(f"CLIP ViT-L/14 pools {CLIP_L['hidden_size']}-wide embeddings, but the transformer "
                         f"takes {width}")
    if kind != "full":
        dims.update(vocab_size=vocab_size, num_hidden_layers=min(dims["num_hidden_layers"], STAND_IN_LAYERS))
    config = CLIPTextConfig(**dims, max_position_embeddings=max_length, hidden_act="quick_gelu", pad_token_id=0,
                            bos_token_id=1, eos_token_id=1)
    return CLIPTextModel(config).eval()
