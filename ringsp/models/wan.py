"""Sequence parallelism for diffusers' WanTransformer3DModel (Wan2.1, Wan2.2 A14B / TI2V-5B).

How the forward is split (nothing of diffusers' forward is copied; hooks and one attention
processor do the work, and `WanSPAdapter.remove()` takes them all out again):

- transformer pre-hook: works out the global token count S from the latent shape, checks
  that every rank of the SP group was given the same shapes, and shards a per-token
  timestep ([B, S], Wan2.2 TI2V) so the per-token modulation (temb) is computed sharded.
- `patch_embedding` hook: the patch tokens [B, C, f, h, w] become this rank's
  [B, C, S_local] (padded on the last ranks when S is uneven); diffusers' own
  flatten/transpose then yields [B, S_local, C], so every per-token op runs sharded.
- `rope` hook: the rotary tables [1, S, 1, D] are sharded the same way.
- `blocks[i].attn1`: a processor that keeps diffusers' projections, qk-norm and rotary but
  attends over the whole sequence (padding masked) through the `ringsp::sp_attention` op.
  Cross-attention (attn2, text and I2V image tokens) is untouched: its keys are replicated,
  its queries local.
- `proj_out` hook: gathers the projected tokens [B, S_local, C_out] back to [B, S, C_out]
  (the narrowest tensor after the blocks), and diffusers unpatchifies the full sequence.

All collectives run on the SP group of the context, so the adapter works inside one half of
a CFG-parallel world. They are torch ops (ringsp.parallel.sp_op) and the transformer-level
hooks, which check and agree across ranks, are kept out of Dynamo: `compile_repeated_blocks`
and `torch.compile(transformer, fullgraph=True)` trace the rest without a graph break.
"""
import math

import torch

from ringsp.parallel import shard_sequence
from ringsp.parallel.agreement import agree, describe
from ringsp.parallel.sp_op import SPGroups, sp_attention, sp_gather

from .sp_hooks import HookSet, call_arg, check_adapter_target, check_precision_name, with_call_arg


class WanSPAdapter:
    """Puts one WanTransformer3DModel under sequence parallelism; `remove()` undoes it."""

    def __init__(self, transformer, ctx, check_inputs=True, attention_precision=None):
        check_adapter_target(transformer, ctx)
        self.transformer = transformer
        self.ctx = ctx
        self.groups = SPGroups.of(ctx)  # by name: what the SP ops take
        self.attention_precision = check_precision_name(attention_precision)
        self.check_inputs = check_inputs
        self.seq_len = None  # global token count of the forward in flight; None outside one
        self._processors = [_WanUSPAttnProcessor(self) for _ in transformer.blocks]
        self._hooks = HookSet()
        try:
            self._install()
        except BaseException:
            self._hooks.remove()
            raise

    # -- installation ------------------------------------------------------------------
    def _install(self):
        t, hooks = self.transformer, self._hooks
        # Eager even under torch.compile(transformer): they check, agree and plan each call.
        eager = torch.compiler.disable
        hooks.add_handle(t.register_forward_pre_hook(eager(self._before_forward), with_kwargs=True))
        hooks.add_handle(t.register_forward_hook(eager(self._after_forward), always_call=True))
        hooks.add_handle(t.patch_embedding.register_forward_hook(self._shard_patches))
        hooks.add_handle(t.rope.register_forward_hook(self._shard_rotary))
        hooks.add_handle(t.proj_out.register_forward_hook(self._gather_tokens))
        for block, proc in zip(t.blocks, self._processors):
            hooks.swap_attr(block.attn1, "processor", proc)

    def remove(self):
        """Restores the transformer's original forward (hooks out, original processors back)."""
        self._hooks.remove()
        self.seq_len = None

    # -- hooks ---------------------------------------------------------------------------
    def _before_forward(self, module, args, kwargs):
        latents = call_arg(args, kwargs, 0, "hidden_states")
        timestep = call_arg(args, kwargs, 1, "timestep")
        error, seq_len = None, None
        try:
            seq_len = self._check_call(latents, timestep)
        except (TypeError, ValueError, RuntimeError) as exc:
            error = exc
        if self.check_inputs:
            # Every rank takes part, so bad or mismatched inputs fail on every rank alike
            # (verified signatures are cached by the parallel layer: steady state is free).
            agree(self.ctx.sp_group, "Wan transformer forward",
                  {"hidden_states": describe(latents), "timestep": describe(timestep)}, error)
        elif error is not None:
            raise error
        self.seq_len = seq_len
        if timestep.dim() == 2:
            # Wan2.2 TI2V: one timestep per token; its modulation must be sharded with the tokens.
            return with_call_arg(args, kwargs, 1, "timestep", shard_sequence(timestep, self.ctx, dim=1))
        return None

    def _after_forward(self, module, args, output):
        self.seq_len = None
        return None

    def _shard_patches(self, module, args, patches):
        if self.seq_len is None:
            return None
        # [B, C, f, h, w] -> [B, C, S_local]: the model's flatten(2).transpose(1, 2) follows.
        tokens = patches.flatten(2).transpose(1, 2)
        return shard_sequence(tokens, self.ctx, dim=1).transpose(1, 2)

    def _shard_rotary(self, module, args, tables):
        if self.seq_len is None:
            return None
        return tuple(shard_sequence(t, self.ctx, dim=1) for t in tables)

    def _gather_tokens(self, module, args, tokens):
        if self.seq_len is None:
            return None
        return sp_gather(tokens, self.groups, dim=1, seq_len=self.seq_len)

    # -- checks --------------------------------------------------------------------------
    def _check_call(self, latents, timestep):
        """The global token count of this call; raises on inputs the adapter cannot shard."""
        if not self._processors_in_place():
            # A processor replaced while SP is on would attend within the local shard only.
            raise RuntimeError("an attn1 processor was replaced while sequence parallelism is enabled; "
                               "call disable_sequence_parallel first, then set processors")
        if not isinstance(latents, torch.Tensor) or latents.dim() != 5:
            raise ValueError(f"hidden_states must be a [B, C, F, H, W] latent tensor, got {describe(latents)}")
        if not isinstance(timestep, torch.Tensor) or timestep.dim() not in (1, 2):
            raise ValueError(f"timestep must be a [B] or per-token [B, S] tensor, got {describe(timestep)}")
        patch = tuple(self.transformer.config.patch_size)
        seq_len = wan_token_count(latents.shape, patch)
        if seq_len == 0:
            raise ValueError(f"hidden_states {tuple(latents.shape)} holds no whole patch of size {patch}")
        if timestep.dim() == 2 and timestep.shape[1] != seq_len:
            raise ValueError(f"timestep has {timestep.shape[1]} per-token entries but the latents "
                             f"make {seq_len} tokens")
        return seq_len

    def _processors_in_place(self):
        return all(block.attn1.processor is proc for block, proc in zip(self.transformer.blocks, self._processors))


def _apply_rotary(x, cos, sin):
    # Wan's rotary on interleaved pairs (x[2i], x[2i+1]); the tables repeat each frequency twice.
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


def _self_qkv(attn, hidden_states):
    if getattr(attn, "fused_projections", False):
        return attn.to_qkv(hidden_states).chunk(3, dim=-1)
    return attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)


class _WanUSPAttnProcessor:
    """Wan self-attention (attn1) over the whole sequence with this rank's token shard."""

    # diffusers' set_attention_backend / enable_parallelism look for these on every processor.
    _attention_backend = None
    _parallel_config = None

    def __init__(self, adapter):
        self._adapter = adapter

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("the sequence-parallel Wan processor serves self-attention without a mask only")
        query, key, value = _self_qkv(attn, hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _apply_rotary(query, *rotary_emb)
            key = _apply_rotary(key, *rotary_emb)
        out = sp_attention(query, key, value, self._adapter.groups, self._adapter.seq_len,
                           precision=self._adapter.attention_precision)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def wan_token_count(latent_shape, patch_size=(1, 2, 2)):
    """Tokens a Wan transformer makes of latents [B, C, F, H, W] (or [F, H, W])."""
    frames, height, width = latent_shape[-3:]
    return math.prod(n // p for n, p in zip((frames, height, width), patch_size))
