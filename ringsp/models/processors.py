"""The attention processor `SPAdapter` puts on every planned attention module.

It keeps diffusers' projections, qk-norms and rotary (the plan's qkv function for the model)
and attends over the whole sequence through the SP ops, one op per block. By kind:
- self:   qkv(attn, states, rotary) -> q, k, v of the image shard [B, S_local, H, D];
          to_out as diffusers applies it.
- joint:  qkv(attn, image, text, rotary) -> ((q, k, v) image, (q, k, v) text); the text is
          replicated and joins as joint tokens, its mask honoured; (to_out, to_add_out).
- prefix: qkv(attn, states, rotary) over [text; image shard] (the call's text_len tokens
          first); attended as joint, returned concatenated again (Flux's single-stream
          blocks, whose attention has no output projection).
"""
import torch

from ringsp.parallel.sp_op import sp_attention


class SPAttnProcessor:
    # diffusers' set_attention_backend / enable_parallelism look for these on every processor.
    _attention_backend = None
    _parallel_config = None

    def __init__(self, adapter, spec):
        self._adapter, self._spec = adapter, spec

    # The parameter names are diffusers' (its Attention passes keyword arguments by name).
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None,
                 encoder_hidden_states_mask=None):
        adapter, kind = self._adapter, self._spec.kind
        joint = kind == "joint"
        if attention_mask is not None or (encoder_hidden_states is not None) != joint:
            want = "with encoder_hidden_states" if joint else "without encoder_hidden_states"
            raise ValueError(f"the sequence-parallel {adapter.plan.name} processor serves {kind} attention {want} "
                             "and without attention_mask")
        if adapter.call is None:
            raise RuntimeError(f"the sequence-parallel {adapter.plan.name} processor runs only inside the "
                               "transformer's forward (its pre-hook plans the sharding)")
        if joint:
            image, text = self._spec.qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
            image_out, text_out = adapter.joint_attention(image, text)
            image_out = attn.to_out[0](image_out.flatten(2, 3).to(image[0].dtype))
            if len(attn.to_out) > 1:
                image_out = attn.to_out[1](image_out)  # dropout
            return image_out, attn.to_add_out(text_out.flatten(2, 3).to(text[0].dtype))
        q, k, v = self._spec.qkv(attn, hidden_states, image_rotary_emb)
        if kind == "prefix":
            n = adapter.call.text_len
            image, text = (q[:, n:], k[:, n:], v[:, n:]), (q[:, :n], k[:, :n], v[:, :n])
            image_out, text_out = adapter.joint_attention(image, text)
            return torch.cat([text_out, image_out], dim=1).flatten(2, 3).to(q.dtype)
        out = sp_attention(q, k, v, adapter.groups, adapter.call.seq_len, precision=adapter.attention_precision)
        return attn.to_out[1](attn.to_out[0](out.flatten(2, 3).type_as(q)))
