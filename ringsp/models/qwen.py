"""Sequence parallelism for diffusers' QwenImageTransformer2DModel (Qwen-Image, -Edit, -Edit-2511,
-Layered).

How the forward is split (nothing of diffusers' forward is copied; hooks and one attention
processor do the work, and `QwenSPAdapter.remove()` takes them all out again):

- transformer pre-hook: checks the call (image tokens S from `hidden_states` [B, S, C] and
  `img_shapes`, text mask), makes every rank of the SP group agree on it, and turns the text
  mask into a `TextPlan` (see `text_plan`). ControlNet residuals [B, S, D] are sharded.
- `img_in` pre-hook: the packed image tokens [B, S, C] become this rank's [B, S_local, C]
  (padded at the end of the sequence on the last ranks). For Edit, the reference-image tokens
  are part of that sequence and are sharded with it. Text stays whole on every rank.
- `pos_embed` hook: the image rotary table [S, D/2] is sharded the same way; the text table
  is left whole.
- `transformer_blocks[i]` pre-hook: `modulate_index` [B, S] (Edit-2511's `zero_cond_t`,
  per-token choice of modulation) is sharded with the tokens.
- `transformer_blocks[i].attn`: a processor that keeps diffusers' projections, qk-norm and
  rotary for both streams and attends through the `ringsp::sp_joint_attention` op, with the
  image shard as the sequence and the text as replicated joint tokens. Every rank gets the
  same text output (joint_out), so the text stream stays identical on every rank.
- `proj_out` hook: gathers [B, S_local, C_out] back to [B, S, C_out] (the narrowest tensor
  after the blocks; proj_out acts per token, so gathering its output equals gathering its input).

All collectives run on the SP group of the context, so the adapter works inside one half of
a CFG-parallel world. They are torch ops (ringsp.parallel.sp_op), the transformer-level hooks
(checks, agreement, the host-side text plan) are kept out of Dynamo, and what the blocks read
of the plan are tensors: `compile_repeated_blocks` and `torch.compile(transformer,
fullgraph=True)` trace the rest without a graph break and recompile for no text mask.
"""
import hashlib
import math
from dataclasses import dataclass

import torch

from ringsp.parallel import shard_sequence
from ringsp.parallel.agreement import agree, describe
from ringsp.parallel.sp_op import SPGroups, sp_attention, sp_gather

from .sp_hooks import HookSet, call_arg, check_adapter_target, check_precision_name, with_call_arg

# Positions of QwenImageTransformer2DModel.forward's and QwenImageTransformerBlock.forward's
# arguments (for calls that pass them positionally).
_ARG_HIDDEN, _ARG_TEXT, _ARG_MASK, _ARG_TIMESTEP, _ARG_SHAPES, _ARG_CONTROL = 0, 1, 2, 3, 4, 7
_BLOCK_ARG_MODULATE_INDEX = 6


@dataclass
class TextPlan:
    """How the text mask [B, T] enters the SP attention, prepared on the host once per mask.

    lens: CPU int64 [B], valid text tokens per row (None: no mask, all valid); rows with
    different counts attend in separate passes inside the op. order: [B, T] token order that
    puts each row's valid tokens first (None: every row is a prefix already); inverse undoes it.
    """
    lens: torch.Tensor | None
    order: torch.Tensor | None
    inverse: torch.Tensor | None

    def to(self, device):
        """order and inverse on `device`; lens stays on the host (the op reads it there)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TextPlan(self.lens, move(self.order), move(self.inverse))


def text_plan(mask):
    """The text mask [B, T] (None = all valid) as a TextPlan.

    The SP attention masks text by a valid-prefix length per row. Attention does not care
    about the order of keys, nor (up to the same permutation) of queries, so a mask with
    holes is made a prefix by moving the valid tokens to the front (and the output back
    afterwards). Masked text tokens still act as queries (their outputs are computed as
    diffusers computes them); they are never keys.
    """
    if mask is None:
        return TextPlan(None, None, None)
    mask = mask.detach().to("cpu", torch.bool)
    counts = mask.sum(dim=1)
    if bool((mask == (torch.arange(mask.shape[1]) < counts[:, None])).all()):
        return TextPlan(counts, None, None)
    # Stable sort on "is padding": valid tokens first, each part in its original order.
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    return TextPlan(counts, order, torch.argsort(order, dim=1))


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
    text: TextPlan
    mask_key: dict  # the mask's per-row valid counts and a digest: ranks must agree on it


class QwenSPAdapter:
    """Puts one QwenImageTransformer2DModel under sequence parallelism; `remove()` undoes it."""

    def __init__(self, transformer, ctx, check_inputs=True, attention_precision=None):
        check_adapter_target(transformer, ctx)
        self.transformer = transformer
        self.ctx = ctx
        self.groups = SPGroups.of(ctx)  # by name: what the SP ops take
        self.attention_precision = check_precision_name(attention_precision)
        self.check_inputs = check_inputs
        self.call = None  # _Call of the forward in flight; None outside one
        # id(mask) -> (mask, its _version, (TextPlan, agreement key)). The pipelines pass the same
        # cond and uncond masks at every step: both stay here, so no step reads a mask on the host.
        self._mask_cache = {}
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
        # Eager even under torch.compile(transformer): they check, agree and plan each call.
        eager = torch.compiler.disable
        hooks.add_handle(t.register_forward_pre_hook(eager(self._before_forward), with_kwargs=True))
        hooks.add_handle(t.register_forward_hook(eager(self._after_forward), always_call=True))
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
        self._mask_cache.clear()
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
        self.call = call
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
        if torch.compiler.is_compiling():  # traced inside the block: a cheap slice, no host-side cache
            return with_call_arg(args, kwargs, _BLOCK_ARG_MODULATE_INDEX, "modulate_index",
                                 shard_sequence(index, self.ctx, dim=1))
        if self._modulate_cache is None or self._modulate_cache[0] is not index:
            self._modulate_cache = (index, shard_sequence(index, self.ctx, dim=1))
        return with_call_arg(args, kwargs, _BLOCK_ARG_MODULATE_INDEX, "modulate_index", self._modulate_cache[1])

    def _gather_tokens(self, module, args, tokens):
        if self.call is None:
            return None
        return sp_gather(tokens, self.groups, dim=1, seq_len=self.call.seq_len)

    # -- attention -----------------------------------------------------------------------
    def joint_attention(self, image, text):
        """SP attention of the image shard (q, k, v) [B, S_local, H, D] with the replicated
        text (q, k, v) [B, T, H, D], honouring the text mask: (image out, text out)."""
        plan = self.call.text
        if plan.order is not None:
            text = tuple(_take_tokens(t, plan.order) for t in text)
        out, text_out = sp_attention(*image, self.groups, self.call.seq_len, joint=text, joint_len=plan.lens,
                                     precision=self.attention_precision)
        if plan.order is not None:
            text_out = _take_tokens(text_out, plan.inverse)
        return out, text_out

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
        plan, mask_key = self._text_plan(mask, batch, text.shape[1], latents.device)
        return _Call(seq_len, plan, mask_key)

    def _text_plan(self, mask, batch, text_len, device):
        if mask is None:
            return text_plan(None), None
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (batch, text_len):
            raise ValueError(f"encoder_hidden_states_mask must be [{batch}, {text_len}] (batch, text tokens), "
                             f"got {describe(mask)}")
        version = _version(mask)
        cached = self._mask_cache.get(id(mask))
        if cached is not None and cached[0] is mask and version is not None and cached[1] == version:
            return cached[2]  # no device sync: a mask seen before, unchanged
        flags = mask.detach().to("cpu", torch.bool)
        key = {"valid": flags.sum(dim=1).tolist(),
               "digest": hashlib.blake2b(flags.numpy().tobytes(), digest_size=8).hexdigest()}
        result = (text_plan(flags).to(device), key)
        if version is not None:
            if len(self._mask_cache) >= _MASK_CACHE_SIZE:  # the oldest goes (dicts keep insertion order)
                self._mask_cache.pop(next(iter(self._mask_cache)))
            self._mask_cache[id(mask)] = (mask, version, result)  # the mask is held: its id stays unique
        return result

    def _processors_in_place(self):
        blocks = self.transformer.transformer_blocks
        return all(block.attn.processor is proc for block, proc in zip(blocks, self._processors))


_MASK_CACHE_SIZE = 4  # cond + uncond masks, with room for a second expert or request


def _version(t):
    """t's in-place modification counter, or None where it has none (inference-mode tensors)."""
    try:
        return t._version
    except RuntimeError:
        return None


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
