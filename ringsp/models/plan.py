"""A model's sequence-parallel plan, the data `SPAdapter` (adapter.py) reads: docs/design.md
("Adding a model") says how to write one. Only the image sequence is ever split: text stays
whole on every rank and joins attention as joint tokens.
"""
from collections import namedtuple
from dataclasses import dataclass, field

import torch

from ringsp.parallel import shard_sequence

OUTPUT = "<output>"  # key of an entry that splits a module's whole (non-tuple) output
# diffusers' names of text-side arguments: replicated, never split
TEXT_ARGS = frozenset({"encoder_hidden_states", "encoder_hidden_states_mask", "encoder_attention_mask", "txt_ids"})
# kind: "self" (the image shard), "joint" (image and text streams), "prefix" ([text; image shard] in
# one stream) or "cross" (left alone); qkv: the model's projections, qk-norm and rotary (adapter.py)
Attention = namedtuple("Attention", "kind qkv", defaults=(None,))
KINDS = ("self", "joint", "prefix", "cross")


@dataclass(frozen=True)
class Split:
    """This rank's shard along `dim` (padded at the end of the sequence on the last ranks).
    A tensor with another number of dims than expected_dims stays whole (diffusers' rule: Wan's
    timestep is split only when it is per token); None stays None; a list is split element-wise."""
    dim: int
    expected_dims: int | None = None

    def __call__(self, x, ctx):
        if isinstance(x, (list, tuple)):
            return [self(t, ctx) for t in x]
        if x is None or (self.expected_dims is not None and x.dim() != self.expected_dims):
            return x
        return shard_sequence(x, ctx, dim=self.dim)


Gather = namedtuple("Gather", "dim")  # the module's output gathered along dim, cut to the image tokens


@dataclass
class Call:
    """What a plan's check learnt about the forward in flight."""
    seq_len: int                # global image tokens
    text_len: int = 0           # text tokens in front of the image shard ("prefix" attention)
    text: object = None         # TextPlan of the joint text mask, or None: all valid
    agreed: dict = field(default_factory=dict)  # more fields every rank must share (a mask's digest)


@dataclass(frozen=True)
class SPPlan:
    name: str                   # in messages: "Wan", "Flux"
    check: object               # (adapter, {argument: value}) -> Call; raises ValueError on bad inputs
    shards: dict                # "" is the transformer's forward; "blocks.*" every block of a list
    attention: dict
    agreed: tuple = ()          # forward arguments fingerprinted across ranks


def image_side(cp_plan, text_outputs=(), replace=None):
    """The shard entries of a diffusers `_cp_plan` without its text side (TEXT_ARGS, and the
    outputs text_outputs names as (path, index)): ringsp replicates text. replace {cp path:
    {path: entries}} moves an entry, e.g. off a repeated block (its hook would be compiled in)."""
    from diffusers.models._modeling_parallel import ContextParallelOutput

    shards = {}
    for path, entries in cp_plan.items():
        if isinstance(entries, ContextParallelOutput):
            shards[path] = Gather(entries.gather_dim)
            continue
        if any(e.split_output != isinstance(key, int) for key, e in entries.items()):
            raise NotImplementedError(f"_cp_plan entry {path!r}: ringsp splits inputs by name, outputs by index")
        kept = {key: Split(e.split_dim, e.expected_dims) for key, e in entries.items()
                if key not in TEXT_ARGS and (path, key) not in text_outputs}
        if kept:
            shards[path] = kept
    for path, moved in (replace or {}).items():
        if path not in shards:
            raise KeyError(f"_cp_plan has no image entry {path!r} to move (has diffusers' plan changed?)")
        del shards[path]
        shards.update(moved)
    return shards


def packed_latents(latents, channels):
    """(batch, image tokens) of packed latents [B, S >= 1, channels]; ValueError otherwise."""
    from ringsp.parallel.agreement import describe

    if not isinstance(latents, torch.Tensor) or latents.dim() != 3 or latents.shape[2] != channels \
            or latents.shape[1] == 0:
        raise ValueError(f"hidden_states must be packed latents [B, S >= 1, {channels}], got {describe(latents)}")
    return latents.shape[:2]


def check_residuals(name, residuals, batch, seq_len):
    """ControlNet residuals: None, or a list of [B, S, D] tensors (split with the image tokens)."""
    if residuals is not None and not (isinstance(residuals, (list, tuple)) and all(
            isinstance(c, torch.Tensor) and c.dim() == 3 and tuple(c.shape[:2]) == (batch, seq_len)
            for c in residuals)):
        raise ValueError(f"{name} must be a list of [{batch}, {seq_len}, D] tensors")


# ------------------------------------------------------------------------------ the joint text mask


@dataclass
class TextPlan:
    """How the text mask [B, T] enters the SP attention, prepared on the host once per mask.
    lens: CPU int64 [B] valid tokens per row (None: all valid; rows of different counts attend
    apart inside the op); order [B, T] puts each row's valid tokens first (None: they are
    already); inverse undoes it."""
    lens: torch.Tensor | None
    order: torch.Tensor | None
    inverse: torch.Tensor | None

    def to(self, device):
        """order and inverse on `device`; lens stays on the host (the op reads it there)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TextPlan(self.lens, move(self.order), move(self.inverse))


def text_plan(mask):
    """The text mask [B, T] (None = all valid) as a TextPlan. The SP attention masks text by a
    valid prefix per row; attention does not care about the order of keys (nor, permuted back,
    of queries), so holes are closed by moving the valid tokens first. Masked text tokens stay
    queries (computed as diffusers computes them), never keys."""
    if mask is None:
        return TextPlan(None, None, None)
    mask = mask.detach().to("cpu", torch.bool)
    counts = mask.sum(dim=1)
    if bool((mask == (torch.arange(mask.shape[1]) < counts[:, None])).all()):
        return TextPlan(counts, None, None)
    # Stable sort on "is padding": valid tokens first, each part in its original order.
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    return TextPlan(counts, order, torch.argsort(order, dim=1))
