"""`SPAdapter`: puts one diffusers transformer under sequence parallelism as its plan (plan.py)
says, by hooks and attention processors that `remove()` takes out again; docs/design.md
("Model adapters") says what runs where. Each model's adapter is this class with its plan.
"""
import inspect
import re

import torch

from ringsp.parallel.agreement import agree, describe
from ringsp.parallel.sp_op import SPGroups, sp_attention, sp_gather

from .plan import KINDS, OUTPUT, Gather
from .sp_hooks import HookSet, call_arg, check_adapter_target, check_precision_name, with_call_arg


class SPAdapter:
    """Puts one transformer under sequence parallelism as `plan` says; `remove()` undoes it."""

    make_plan = None  # () -> the model's SPPlan, set by its subclass (built on first use: no diffusers import before)

    def __init__(self, transformer, ctx, check_inputs=True, attention_precision=None):
        check_adapter_target(transformer, ctx)
        self.plan = self.make_plan()
        self.transformer, self.ctx = transformer, ctx
        self.groups = SPGroups.of(ctx)  # by name: what the SP ops take
        self.attention_precision = check_precision_name(attention_precision)
        self.check_inputs = check_inputs
        self.call = None  # the plan's Call of the forward in flight; None outside one
        self.memo = {}  # what a plan's check keeps between forwards (Qwen: the text masks seen)
        self._forward = _ModuleSplit(self, self.plan.shards.get("", {}), transformer)  # the forward's own entries
        self._processors = []  # (attention module, its SP processor)
        self._hooks = HookSet()
        try:
            self._install()
        except BaseException:
            self._hooks.remove()
            raise

    def _install(self):
        t, hooks = self.transformer, self._hooks
        # Eager even under torch.compile(transformer): they check, agree and plan each call.
        eager = torch.compiler.disable
        hooks.add_handle(t.register_forward_pre_hook(eager(self._before_forward), with_kwargs=True))
        hooks.add_handle(t.register_forward_hook(eager(self._after_forward), always_call=True))
        for path, entries in self.plan.shards.items():
            if path == "":
                continue
            modules = _modules(t, path)
            # One hook object for every module of a pattern: the blocks keep sharing one compiled graph.
            split = _ModuleSplit(self, entries, modules[0])
            for module in modules:
                if split.inputs:
                    hooks.add_handle(module.register_forward_pre_hook(split.before, with_kwargs=True))
                if split.outputs or split.gather:
                    hooks.add_handle(module.register_forward_hook(split.after))
        for pattern, spec in self.plan.attention.items():
            if spec.kind not in KINDS:
                raise ValueError(f"attention kind must be one of {KINDS}, got {spec.kind!r}")
            for module in _modules(t, pattern):
                if spec.kind != "cross":  # cross-attention: replicated text keys, local queries; left alone
                    proc = SPAttnProcessor(self, spec)
                    self._processors.append((module, proc))
                    hooks.swap_attr(module, "processor", proc)

    def remove(self):
        """Restores the transformer's original forward (hooks out, original processors back)."""
        self._hooks.remove()
        self.call = None
        self.memo.clear()

    # -- the transformer's hooks -------------------------------------------------------
    def _before_forward(self, module, args, kwargs):
        error, call, given = None, None, {}
        try:
            given = dict(zip(self._forward.names, args)) | kwargs
            if not all(m.processor is p for m, p in self._processors):
                # A processor replaced while SP is on would attend within the local shard only.
                raise RuntimeError("an attention processor was replaced while sequence parallelism is enabled; "
                                   "call disable_sequence_parallel first, then set processors")
            call = self.plan.check(self, given)
        except (TypeError, ValueError, RuntimeError) as exc:
            error = exc
        if self.check_inputs:
            # verified signatures are cached by the parallel layer: steady state is free
            fields = {name: _fingerprint(given.get(name)) for name in self.plan.agreed}
            agree(self.ctx.sp_group, f"{self.plan.name} transformer forward",
                  fields | ({} if call is None else call.agreed), error)
        elif error is not None:
            raise error
        self.call = call
        return self._forward.split_inputs(args, kwargs)

    def _after_forward(self, module, args, output):
        self.call = None

    # -- attention -----------------------------------------------------------------------
    def joint_attention(self, image, text):
        """(image out, text out): the image shard's q, k, v with the replicated text's, text mask honoured."""
        plan = self.call.text
        order = None if plan is None else plan.order
        if order is not None:
            text = tuple(_take_tokens(t, order) for t in text)
        out, text_out = sp_attention(*image, self.groups, self.call.seq_len, joint=text,
                                     joint_len=None if plan is None else plan.lens, precision=self.attention_precision)
        if order is not None:
            text_out = _take_tokens(text_out, plan.inverse)
        return out, text_out


class _ModuleSplit:
    """The entries of one module path: split inputs before it runs, split or gather outputs after."""

    def __init__(self, adapter, entries, module):
        self.adapter = adapter
        self.gather = entries if isinstance(entries, Gather) else None
        entries = {} if self.gather else entries
        self.names = list(inspect.signature(module.forward).parameters)
        self.inputs = {k: (self.names.index(k), v) for k, v in entries.items() if isinstance(k, str) and k != OUTPUT}
        self.outputs = {k: v for k, v in entries.items() if k not in self.inputs}

    def before(self, module, args, kwargs):
        return None if self.adapter.call is None else self.split_inputs(args, kwargs)

    def split_inputs(self, args, kwargs):
        for name, (index, split) in self.inputs.items():
            value = call_arg(args, kwargs, index, name, None)
            if value is not None:
                args, kwargs = with_call_arg(args, kwargs, index, name, split(value, self.adapter.ctx))
        return args, kwargs

    def after(self, module, args, output):
        adapter = self.adapter
        if adapter.call is None:
            return None
        if self.gather:
            return sp_gather(output, adapter.groups, dim=self.gather.dim, seq_len=adapter.call.seq_len)
        if OUTPUT in self.outputs:
            return self.outputs[OUTPUT](output, adapter.ctx)
        return tuple(self.outputs[i](x, adapter.ctx) if i in self.outputs else x for i, x in enumerate(output))


def _modules(root, pattern):
    """The submodules a plan path names ("*" stands for one name, e.g. a block's index)."""
    regex = re.compile(r"[^.]+".join(re.escape(part) for part in pattern.split("*")) + r"\Z")
    found = [m for name, m in root.named_modules() if regex.match(name)]
    if not found:
        raise ValueError(f"the {type(root).__name__} has no module {pattern!r} that its SP plan names")
    return found


class SPAttnProcessor:
    """diffusers' projections, qk-norms and rotary (the plan's qkv: q, k, v [B, S, H, D] of the
    states, for joint of image and text apart), then attention over the whole sequence through
    one SP op, the replicated text as joint tokens; the output as diffusers' processor returns it."""

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
            image_out, text_out = adapter.joint_attention((q[:, n:], k[:, n:], v[:, n:]),
                                                          (q[:, :n], k[:, :n], v[:, :n]))
            return torch.cat([text_out, image_out], dim=1).flatten(2, 3).to(q.dtype)
        out = sp_attention(q, k, v, adapter.groups, adapter.call.seq_len, precision=adapter.attention_precision)
        return attn.to_out[1](attn.to_out[0](out.flatten(2, 3).type_as(q)))


def _fingerprint(value):
    """An argument as the ranks compare it: tensors by shape, dtype and device, other values by repr."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [describe(v) for v in value]
    return describe(value) if value is None or isinstance(value, torch.Tensor) else repr(value)


def _take_tokens(t, index):
    """t [B, T, H, D] with its tokens reordered per row by index [B, T]."""
    return t.gather(1, index[:, :, None, None].expand_as(t))
