"""`SPAdapter`: puts one diffusers transformer under sequence parallelism as its plan says
(ringsp.models.plan); each model's adapter is this class with its plan.

Nothing of diffusers' forward is copied. What is installed, and taken out again by `remove()`:
- a pre-hook on the transformer: the plan's check of the call, then every rank of the SP group
  agrees on it (so bad or mismatched inputs fail on every rank alike), then the forward's own
  entries ("") are split;
- a pre-hook (input entries) or a hook (output entries, the gather) on every planned module;
  they act only inside a forward in flight;
- an SP processor (processors.py) on every planned self / joint / prefix attention module.

All collectives run on the context's SP group, so a model works inside one half of a
CFG-parallel world. They are torch ops (ringsp.parallel.sp_op); the transformer-level hooks
(checks, agreement, the host-side text plan) are kept out of Dynamo, and what the blocks read
of the call are ints and tensors: `compile_repeated_blocks` and `torch.compile(transformer,
fullgraph=True)` trace the rest without a graph break.
"""
import inspect
import re

import torch

from ringsp.parallel.agreement import agree
from ringsp.parallel.sp_op import SPGroups, sp_attention, sp_gather

from .plan import OUTPUT, Gather, fingerprint
from .processors import SPAttnProcessor
from .sp_hooks import HookSet, call_arg, check_adapter_target, check_precision_name, with_call_arg
from .text_mask import take_tokens


class SPAdapter:
    """Puts one transformer under sequence parallelism as `plan` says; `remove()` undoes it."""

    plan = None  # each model's SPPlan, set by its subclass

    def __init__(self, transformer, ctx, check_inputs=True, attention_precision=None):
        check_adapter_target(transformer, ctx)
        self.transformer = transformer
        self.ctx = ctx
        self.groups = SPGroups.of(ctx)  # by name: what the SP ops take
        self.attention_precision = check_precision_name(attention_precision)
        self.check_inputs = check_inputs
        self.call = None  # the plan's Call of the forward in flight; None outside one
        self.memo = {}  # what a plan's check keeps between forwards (Qwen: the text masks seen)
        self._arg_names = list(inspect.signature(transformer.forward).parameters)
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
            given = dict(zip(self._arg_names, args)) | kwargs
            if not all(m.processor is p for m, p in self._processors):
                # A processor replaced while SP is on would attend within the local shard only.
                raise RuntimeError("an attention processor was replaced while sequence parallelism is enabled; "
                                   "call disable_sequence_parallel first, then set processors")
            call = self.plan.check(self, given)
        except (TypeError, ValueError, RuntimeError) as exc:
            error = exc
        if self.check_inputs:
            # verified signatures are cached by the parallel layer: steady state is free
            fields = {name: fingerprint(given.get(name)) for name in self.plan.agreed}
            agree(self.ctx.sp_group, f"{self.plan.name} transformer forward",
                  fields | ({} if call is None else call.agreed), error)
        elif error is not None:
            raise error
        self.call = call
        entries = self.plan.shards.get("", {})
        for name, split in entries.items():
            index = self._arg_names.index(name)
            value = call_arg(args, kwargs, index, name, None)
            if value is not None:
                args, kwargs = with_call_arg(args, kwargs, index, name, split(value, self.ctx))
        return (args, kwargs) if entries else None

    def _after_forward(self, module, args, output):
        self.call = None
        return None

    # -- attention -----------------------------------------------------------------------
    def joint_attention(self, image, text):
        """SP attention of the image shard (q, k, v) [B, S_local, H, D] with the replicated
        text (q, k, v) [B, T, H, D], honouring the text mask: (image out, text out)."""
        plan = self.call.text
        order = None if plan is None else plan.order
        if order is not None:
            text = tuple(take_tokens(t, order) for t in text)
        out, text_out = sp_attention(*image, self.groups, self.call.seq_len, joint=text,
                                     joint_len=None if plan is None else plan.lens, precision=self.attention_precision)
        if order is not None:
            text_out = take_tokens(text_out, plan.inverse)
        return out, text_out


class _ModuleSplit:
    """The entries of one module path: split inputs before it runs, split or gather outputs after."""

    def __init__(self, adapter, entries, module):
        self.adapter = adapter
        self.gather = entries if isinstance(entries, Gather) else None
        entries = {} if self.gather else entries
        names = list(inspect.signature(module.forward).parameters)
        self.inputs = {k: (names.index(k), v) for k, v in entries.items() if isinstance(k, str) and k != OUTPUT}
        self.outputs = {k: v for k, v in entries.items() if k not in self.inputs}

    def before(self, module, args, kwargs):
        ctx = self.adapter.ctx
        if self.adapter.call is None:
            return None
        for name, (index, split) in self.inputs.items():
            value = call_arg(args, kwargs, index, name, None)
            if value is not None:
                args, kwargs = with_call_arg(args, kwargs, index, name, split(value, ctx))
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
