"""Sequence parallelism for diffusers' QwenImageTransformer2DModel (Qwen-Image, -Edit, -Edit-2511,
-Layered).

How the forward is split (nothing of diffusers' forward is copied; hooks and one attention
processor do the work, and `QwenSPAdapter.remove()` takes them all out again):

- transformer pre-hook: checks the call (image tokens S from `hidden_states` [B, S, C] and
  `img_shapes`, text mask), makes every rank of the SP group agree on it, and turns the text
  mask into `TextGroup`s (see `text_groups`). ControlNet residuals [B, S, D] are sharded.
- `img_in` pre-hook: the packed image tokens [B, S, C] become this rank's [B, S_local, C]
  (padded at the end of the sequence on the last ranks). For Edit, the reference-image tokens
  are part of that sequence and are sharded with it. Text stays whole on every rank.
- `pos_embed` hook: the image rotary table [S, D/2] is sharded the same way; the text table
  is left whole.
- `transformer_blocks[i]` pre-hook: `modulate_index` [B, S] (Edit-2511's `zero_cond_t`,
  per-token choice of modulation) is sharded with the tokens.
- `transformer_blocks[i].attn`: a processor that keeps diffusers' projections, qk-norm and
  rotary for both streams and calls `usp_attention` with the image shard as the sequence and
  the text as replicated joint tokens. Every rank gets the same text output (joint_out), so
  the text stream stays identical on every rank.
- `proj_out` hook: gathers [B, S_local, C_out] back to [B, S, C_out] (the narrowest tensor
  after the blocks; proj_out acts per token, so gathering its output equals gathering its input).

All collectives run on the SP group of the context, so the adapter works inside one half of
a CFG-parallel world.
"""
import hashlib
import math
from dataclasses import dataclass

import torch

from ringsp.parallel import gather_sequence, shard_sequence, usp_attention
from ringsp.parallel.agreement import agree, describe

from .sp_hooks import HookSet, call_arg, check_adapter_target, with_call_arg

# Positions of QwenImageTransformer2DModel.forward's and QwenImageTransformerBlock.forward's
# arguments (for calls that pass them positionally).
_ARG_HIDDEN, _ARG_TEXT, _ARG_MASK, _ARG_TIMESTEP, _ARG_SHAPES, _ARG_CONTROL = 0, 1, 2, 3, 4, 7
_BLOCK_ARG_MODULATE_INDEX = 6


@dataclass
class TextGroup:
    """Batch rows that attend with the same number of valid text tokens.

    rows: LongTensor of batch indices (None = the whole batch). order: [len(rows), T] token
    order that puts the valid text tokens first (None = already a prefix); inverse undoes it.
    valid: the number of valid text tokens (usp_attention's joint_len).
    """
    rows: torch.Tensor | None
    order: torch.Tensor | None
    inverse: torch.Tensor | None
    valid: int

    def to(self, device):
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TextGroup(move(self.rows), move(self.order), move(self.inverse), self.valid)


def text_groups(mask, batch, text_len):
    """The text mask [B, T] (None = all valid) as a list of TextGroup.

    usp_attention masks text by a single valid-prefix length. Attention does not care about
    the order of keys, nor (up to the same permutation) of queries, so a mask with holes is
    made a prefix by moving the valid tokens to the front (and the output back afterwards),
    and rows with different valid counts attend in separate calls. Masked text tokens still
    act as queries (their outputs are computed as diffusers computes them); they are never keys.
    """
    if mask is None:
        return [TextGroup(None, None, None, text_len)]
    mask = mask.detach().to("cpu", torch.bool)
    counts = mask.sum(dim=1)
    is_prefix = (mask == (torch.arange(text_len) < counts[:, None])).all(dim=1)
    distinct = torch.unique(counts).tolist()
    groups = []
    for valid in distinct:
        rows = torch.nonzero(counts == valid).flatten()
        order = inverse = None
        if not bool(is_prefix[rows].all()):
            # Stable sort on "is padding": valid tokens first, each part in its original order.
            order = torch.sort((~mask[rows]).to(torch.uint8), dim=1, stable=True).indices
            inverse = torch.argsort(order, dim=1)
        groups.append(TextGroup(None if len(distinct) == 1 else rows, order, inverse, int(valid)))
    return groups


def image_grids(img_shapes):
    """The (frames, height, width) grids whose tokens the image rotary table covers, read from
    `img_shapes` the way diffusers' QwenEmbedRope reads it: a list holds one entry per batch
    sample and only the first is used; an entry is one grid or a list of grids (Edit: target,
    then reference images; Layered: the layers, then the condition image)."""
    shapes = img_shapes[0] if isinstance(img_shapes, list) and img_shapes else img_shapes
    grids = shapes if isinstance(shapes, list) else [shapes]
    if not grids:
        raise ValueError(f"img_shapes holds no image grid: {img_shapes!r}")
    return [_grid(g) for g in grids]


def _grid(grid):
    if not isinstance(grid, (tuple, list)) or len(grid) != 3:
        raise ValueError(f"img_shapes entries must be (frames, height, width) triples, got {grid!r}")
    try:
        values = tuple(int(n) for n in grid)
    except (TypeError, ValueError):
        raise ValueError(f"img_shapes entries must be (frames, height, width) of ints, got {grid!r}") from None
    if min(values) < 1:
        raise ValueError(f"img_shapes entries must be positive, got {grid!r}")
    return values


def qwen_token_count(img_shapes):
    """Image tokens a Qwen-Image transformer makes of `img_shapes` (target plus reference images)."""
    return sum(math.prod(g) for g in image_grids(img_shapes))


@dataclass
class _Call:
    """What the pre-hook learnt about the forward in flight."""
    seq_len: int
    groups: list
    mask_key: dict  # the mask's per-row valid counts and a digest: ranks must agree on it


class QwenSPAdapter:
    """Puts one QwenImageTransformer2DModel under sequence parallelism; `remove()` undoes it."""

    def __init__(self, transformer, ctx, check_inputs=True):
        check_adapter_target(transformer, ctx)
        self.transformer = transformer
        self.ctx = ctx
        self.check_inputs = check_inputs
        self.call = None  # _Call of the forward in flight; None outside one
        self._mask_cache = None  # (mask tensor, its _version, _Call pieces): the pipeline reuses one mask
        self._modulate_cache = None  # (full modulate_index, its shard) within one forward
        self._processors = [_QwenUSPAttnProcessor(self) for _ in transformer.transformer_blocks]
        self._hooks = HookSet()
        try:
            self._install()
        except BaseException:
            self._hooks.remove()
            raise

    @property
    def seq_len(self):
        return None if self.call is None else self.call.seq_len

    # -- installation ------------------------------------------------------------------
    def _install(self):
        t, hooks = self.transformer, self._hooks
        hooks.add_handle(t.register_forward_pre_hook(self._before_forward, with_kwargs=True))
        hooks.add_handle(t.register_forward_hook(self._after_forward, always_call=True))
        hooks.add_handle(t.img_in.register_forward_pre_hook(self._shard_image_tokens))
        hooks.add_handle(t.pos_embed.register_forward_hook(self._shard_rotary))
        hooks.add_handle(t.proj_out.register_forward_hook(self._gather_tokens))
        for block, proc in zip(t.transformer_blocks, self._processors):
            hooks.add_handle(block.register_forward_pre_hook(self._shard_modulate_index, with_kwargs=True))
            hooks.swap_attr(block.attn, "processor", proc)

    def remove(self):
        """Restores the transformer's original forward (hooks out, original processors back)."""
        self._hooks.remove()
        self.call = None
        self._mask_cache = None
        self._modulate_cache = None

    # -- hooks ---------------------------------------------------------------------------
    def _before_forward(self, module, args, kwargs):
        latents = call_arg(args, kwargs, _ARG_HIDDEN, "hidden_states")
        text = call_arg(args, kwargs, _ARG_TEXT, "encoder_hidden_states", None)
        mask = call_arg(args, kwargs, _ARG_MASK, "encoder_hidden_states_mask", None)
        timestep = call_arg(args, kwargs, _ARG_TIMESTEP, "timestep", None)
        img_shapes = call_arg(args, kwargs, _ARG_SHAPES, "img_shapes", None)
        control = call_arg(args, kwargs, _ARG_CONTROL, "controlnet_block_samples", None)
        error, call = None, None
        try:
            call = self._check_call(latents, text, mask, timestep, img_shapes, control)
        except (TypeError, ValueError, RuntimeError) as exc:
            error = exc
        if self.check_inputs:
            # Every rank takes part, so bad or mismatched inputs fail on every rank alike
            # (verified signatures are cached by the parallel layer: steady state is free).
            fields = {"hidden_states": describe(latents), "encoder_hidden_states": describe(text),
                      "encoder_hidden_states_mask": describe(mask), "timestep": describe(timestep),
                      "img_shapes": repr(img_shapes), "mask": None if call is None else call.mask_key,
                      "controlnet_block_samples": [describe(c) for c in control] if _is_seq(control) else None}
            agree(self.ctx.sp_group, "Qwen-Image transformer forward", fields, error)
        elif error is not None:
            raise error
        device = latents.device
        self.call = _Call(call.seq_len, [g.to(device) for g in call.groups], call.mask_key)
        if control is not None:
            sharded = [shard_sequence(c, self.ctx, dim=1) for c in control]
            return with_call_arg(args, kwargs, _ARG_CONTROL, "controlnet_block_samples", sharded)
        return None

    def _after_forward(self, module, args, output):
        self.call = None
        self._modulate_cache = None
        return None

    def _shard_image_tokens(self, module, args):
        if self.call is None:
            return None
        return (shard_sequence(args[0], self.ctx, dim=1),) + tuple(args[1:])

    def _shard_rotary(self, module, args, tables):
        if self.call is None:
            return None
        image_table, text_table = tables
        return shard_sequence(image_table, self.ctx, dim=0), text_table

    def _shard_modulate_index(self, module, args, kwargs):
        if self.call is None:
            return None
        index = call_arg(args, kwargs, _BLOCK_ARG_MODULATE_INDEX, "modulate_index", None)
        if index is None:
            return None
        if self._modulate_cache is None or self._modulate_cache[0] is not index:
            self._modulate_cache = (index, shard_sequence(index, self.ctx, dim=1))
        return with_call_arg(args, kwargs, _BLOCK_ARG_MODULATE_INDEX, "modulate_index", self._modulate_cache[1])

    def _gather_tokens(self, module, args, tokens):
        if self.call is None:
            return None
        return gather_sequence(tokens, self.ctx, dim=1, seq_len=self.call.seq_len)

    # -- attention -----------------------------------------------------------------------
    def joint_attention(self, image, text):
        """usp_attention of the image shard (q, k, v) [B, S_local, H, D] with the replicated
        text (q, k, v) [B, T, H, D], honouring the text mask: (image out, text out)."""
        groups = self.call.groups
        if len(groups) == 1 and groups[0].rows is None:
            return self._attend(image, text, groups[0])
        image_out, text_out = torch.empty_like(image[0]), torch.empty_like(text[0])
        for group in groups:
            pick = lambda ts: tuple(t.index_select(0, group.rows) for t in ts)  # noqa: E731
            out, joint_out = self._attend(pick(image), pick(text), group)
            image_out.index_copy_(0, group.rows, out)
            text_out.index_copy_(0, group.rows, joint_out)
        return image_out, text_out

    def _attend(self, image, text, group):
        if group.order is not None:
            text = tuple(_take_tokens(t, group.order) for t in text)
        out, joint_out = usp_attention(*image, self.ctx, seq_len=self.call.seq_len, joint_q=text[0],
                                       joint_k=text[1], joint_v=text[2], joint_len=group.valid)
        if group.order is not None:
            joint_out = _take_tokens(joint_out, group.inverse)
        return out, joint_out

    # -- checks --------------------------------------------------------------------------
    def _check_call(self, latents, text, mask, timestep, img_shapes, control):
        """The _Call of this forward; raises on inputs the adapter cannot shard."""
        if not self._processors_in_place():
            # A processor replaced while SP is on would attend within the local shard only.
            raise RuntimeError("an attention processor was replaced while sequence parallelism is enabled; "
                               "call disable_sequence_parallel first, then set processors")
        cfg = self.transformer.config
        if not isinstance(latents, torch.Tensor) or latents.dim() != 3 or latents.shape[2] != cfg.in_channels:
            raise ValueError(f"hidden_states must be packed latents [B, S, {cfg.in_channels}], got {describe(latents)}")
        batch, seq_len = latents.shape[:2]
        if seq_len == 0:
            raise ValueError("hidden_states holds no image token (S = 0)")
        if not isinstance(text, torch.Tensor) or text.dim() != 3 or text.shape[0] != batch \
                or text.shape[2] != cfg.joint_attention_dim or text.shape[1] == 0:
            raise ValueError(f"encoder_hidden_states must be [{batch}, T >= 1, {cfg.joint_attention_dim}], "
                             f"got {describe(text)}")
        if not isinstance(timestep, torch.Tensor):
            raise ValueError(f"timestep must be a tensor, got {describe(timestep)}")
        _check_img_shapes(img_shapes, batch, seq_len, cfg.zero_cond_t)
        _check_control(control, batch, seq_len)
        groups, mask_key = self._text_groups(mask, batch, text.shape[1])
        return _Call(seq_len, groups, mask_key)

    def _text_groups(self, mask, batch, text_len):
        if mask is None:
            return text_groups(None, batch, text_len), None
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (batch, text_len):
            raise ValueError(f"encoder_hidden_states_mask must be [{batch}, {text_len}] (batch, text tokens), "
                             f"got {describe(mask)}")
        cached = self._mask_cache
        if cached is not None and cached[0] is mask and cached[1] == mask._version:
            return cached[2]  # no device sync: the same mask as the last forward
        flags = mask.detach().to("cpu", torch.bool)
        key = {"valid": flags.sum(dim=1).tolist(),
               "digest": hashlib.blake2b(flags.numpy().tobytes(), digest_size=8).hexdigest()}
        result = (text_groups(flags, batch, text_len), key)
        self._mask_cache = (mask, mask._version, result)
        return result

    def _processors_in_place(self):
        blocks = self.transformer.transformer_blocks
        return all(block.attn.processor is proc for block, proc in zip(blocks, self._processors))


def _is_seq(x):
    return isinstance(x, (list, tuple))


def _check_img_shapes(img_shapes, batch, seq_len, per_sample):
    """img_shapes must describe exactly the S image tokens (else the rotary table and the tokens
    would be sharded differently). per_sample (zero_cond_t): every sample's grids must, too."""
    if img_shapes is None:
        raise ValueError("img_shapes is required: it gives the image grids of the rotary table")
    tokens = qwen_token_count(img_shapes)
    if tokens != seq_len:
        raise ValueError(f"img_shapes {img_shapes!r} describe {tokens} image tokens but hidden_states "
                         f"has {seq_len}")
    if not per_sample:
        return
    if not isinstance(img_shapes, list) or len(img_shapes) != batch:
        raise ValueError(f"with zero_cond_t, img_shapes must be a list of {batch} per-sample lists of grids, "
                         f"got {img_shapes!r}")
    for sample in img_shapes:
        if not isinstance(sample, (list, tuple)) or qwen_token_count([list(sample)]) != seq_len:
            raise ValueError(f"with zero_cond_t, every sample of img_shapes must describe {seq_len} tokens, "
                             f"got {sample!r}")


def _check_control(control, batch, seq_len):
    if control is None:
        return
    if not _is_seq(control) or not all(isinstance(c, torch.Tensor) and c.dim() == 3 for c in control):
        raise ValueError("controlnet_block_samples must be a list of [B, S, D] tensors")
    bad = [tuple(c.shape) for c in control if tuple(c.shape[:2]) != (batch, seq_len)]
    if bad:
        raise ValueError(f"controlnet_block_samples must be [{batch}, {seq_len}, D], got {bad}")


def _take_tokens(t, index):
    """t [B, T, H, D] with its tokens reordered per row by index [B, T]."""
    return t.gather(1, index[:, :, None, None].expand_as(t))


def _project(attn, states, to_q, to_k, to_v, norm_q, norm_k):
    """One stream's q, k, v as [B, S, H, D], qk-normed (diffusers' order: project, split heads, norm)."""
    head_dim = attn.inner_dim // attn.heads
    q, k, v = (proj(states).unflatten(-1, (-1, head_dim)) for proj in (to_q, to_k, to_v))
    if norm_q is not None:
        q = norm_q(q)
    if norm_k is not None:
        k = norm_k(k)
    return q, k, v


class _QwenUSPAttnProcessor:
    """Qwen-Image's joint (text + image) attention with this rank's image shard."""

    # diffusers' set_attention_backend / enable_parallelism look for these on every processor.
    _attention_backend = None
    _parallel_config = None

    def __init__(self, adapter):
        self._adapter = adapter

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, encoder_hidden_states_mask=None,
                 attention_mask=None, image_rotary_emb=None):
        from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

        if encoder_hidden_states is None or attention_mask is not None:
            raise ValueError("the sequence-parallel Qwen-Image processor serves joint text + image attention "
                             "with encoder_hidden_states and without attention_mask")
        if self._adapter.call is None:
            raise RuntimeError("the sequence-parallel Qwen-Image processor runs only inside the transformer's "
                               "forward (its pre-hook plans the sharding)")
        image = _project(attn, hidden_states, attn.to_q, attn.to_k, attn.to_v, attn.norm_q, attn.norm_k)
        text = _project(attn, encoder_hidden_states, attn.add_q_proj, attn.add_k_proj, attn.add_v_proj,
                        attn.norm_added_q, attn.norm_added_k)
        if image_rotary_emb is not None:
            image_freqs, text_freqs = image_rotary_emb
            rotate = lambda x, f: apply_rotary_emb_qwen(x, f, use_real=False)  # noqa: E731
            image = (rotate(image[0], image_freqs), rotate(image[1], image_freqs), image[2])
            text = (rotate(text[0], text_freqs), rotate(text[1], text_freqs), text[2])
        image_out, text_out = self._adapter.joint_attention(image, text)
        image_out = attn.to_out[0](image_out.flatten(2, 3).to(image[0].dtype))
        if len(attn.to_out) > 1:
            image_out = attn.to_out[1](image_out)  # dropout
        text_out = attn.to_add_out(text_out.flatten(2, 3).to(text[0].dtype))
        return image_out, text_out
