"""The text side of dummy Qwen-Image pipelines, built offline: tokenizer, Qwen2.5-VL text
encoder configs, and the image + text processor of the Edit pipeline.

- Tokenizer: a real `Qwen2Tokenizer` (byte-level BPE, Qwen's pre-tokenizer regex, Qwen's
  special tokens) whose merges are learnt here from the pipelines' own prompt templates
  (and the default prompt). The templates therefore tokenize into the same pieces as with
  Qwen's vocabulary, so the pipelines drop exactly their system prompt (their
  `prompt_template_encode_start_idx`, 34 and 64 tokens); other text falls back to bytes
  (so it makes more tokens than Qwen's 151k-entry vocabulary would).
- Text encoder: `Qwen2_5_VLForConditionalGeneration` with random weights: Qwen2.5-VL-7B as
  published (`full=True`), its real widths at 2 text + 2 vision layers (the stand-in), or
  toy widths for the tiny models. Token ids of the config are the tokenizer's.
- Processor: `Qwen2VLProcessor` needs a video processor, which transformers 5 builds only
  with torchvision. `QwenImageTextProcessor` is that processor without the video part: the
  same class code for images and text (image placeholder expansion, Qwen2-VL's image
  processor), so the Edit pipeline's prompt encoding is unchanged.
"""
import collections
import re

from transformers import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"

# Qwen2.5-VL-7B-Instruct's config.json (the text encoder of Qwen-Image and Qwen-Image-Edit).
_QWEN25_VL_7B_TEXT = {
    "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
}
_QWEN25_VL_7B_VISION = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
    "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
}
STAND_IN_LAYERS = 2


def qwen_tokenizer(corpus):
    """A Qwen2Tokenizer whose merges make every pre-token of `corpus` (strings) one token."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    specials = "(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + ")"
    words = collections.Counter(word for text in corpus for piece in re.split(specials, text)
                                if piece and piece not in SPECIAL_TOKENS
                                for word, _ in split.pre_tokenize_str(piece))
    merges = _learn_merges(words)
    vocab = {}
    for token in SPECIAL_TOKENS + tuple(sorted(pre_tokenizers.ByteLevel.alphabet())) + tuple(a + b for a, b in merges):
        vocab.setdefault(token, len(vocab))
    return Qwen2Tokenizer(vocab=vocab, merges=merges, additional_special_tokens=list(SPECIAL_TOKENS[1:]))


def _learn_merges(words):
    """Byte-pair merges, most frequent pair first (ties by the pair itself, so every process
    learns the same list), until every word is a single token."""
    pieces = {w: list(w) for w in words}
    merges = []
    while True:
        counts = collections.Counter()
        for word, parts in pieces.items():
            for pair in zip(parts, parts[1:]):
                counts[pair] += words[word]
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        pieces = {w: _merge(parts, best) for w, parts in pieces.items()}


def _merge(parts, pair):
    out, i = [], 0
    while i < len(parts):
        if tuple(parts[i:i + 2]) == pair:
            out.append(parts[i] + parts[i + 1])
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


def text_encoder_config(tokenizer, text_dim, kind):
    """Qwen2_5_VLConfig for kind "full" (Qwen2.5-VL-7B), "stand-in" (its widths, 2 + 2 layers)
    or "tiny" (text width `text_dim`, toy vision tower)."""
    from transformers import Qwen2_5_VLConfig

    if kind == "tiny":
        heads = 2
        text = {"vocab_size": len(tokenizer), "hidden_size": text_dim, "intermediate_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": heads, "num_key_value_heads": 1, "max_position_embeddings": 4096,
                "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                                          "mrope_section": _mrope_section(text_dim // heads // 2)}}
        vision = {"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": text_dim,
                  "fullatt_block_indexes": [1], "window_size": 56}
    else:
        if text_dim != _QWEN25_VL_7B_TEXT["hidden_size"]:
            raise ValueError(f"the Qwen2.5-VL-7B text encoder makes {_QWEN25_VL_7B_TEXT['hidden_size']}-wide "
                             f"embeddings, but the transformer takes {text_dim}")
        text, vision = dict(_QWEN25_VL_7B_TEXT), dict(_QWEN25_VL_7B_VISION)
        if kind == "stand-in":
            text.update(vocab_size=len(tokenizer), num_hidden_layers=STAND_IN_LAYERS)
            vision.update(depth=STAND_IN_LAYERS, fullatt_block_indexes=[STAND_IN_LAYERS - 1])
        elif kind != "full":
            raise ValueError(f"kind must be 'full', 'stand-in' or 'tiny', got {kind!r}")
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", IMAGE_TOKEN), ("video_token_id", VIDEO_TOKEN),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text.update(bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tokenizer.pad_token_id)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)


def _mrope_section(half_head_dim):
    """The rotary half-dimension split over (time, height, width), about equally."""
    t = half_head_dim // 3
    h = (half_head_dim - t) // 2
    return [t, h, half_head_dim - t - h]


class QwenImageTextProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor for text and images only (no video processor, hence no torchvision).

    Everything it does to images and text is Qwen2VLProcessor's own code: the image
    processor makes `pixel_values` and `image_grid_thw`, and each `<|image_pad|>` of the text
    is expanded to one token per merged patch before tokenizing."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        if tokenizer is None or image_processor is None:
            raise ValueError("QwenImageTextProcessor needs an image_processor and a tokenizer")
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
        self.video_token = getattr(tokenizer, "video_token", None) or VIDEO_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


def image_processor():
    """Qwen2-VL's image processor (PIL backend) with Qwen2.5-VL-7B's pixel limits
    (min_pixels 3136, max_pixels 12845056 in its preprocessor_config.json)."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384})
