"""A model's sequence-parallel plan: what `SPAdapter` (ringsp.models.adapter) reads to put it under SP.

    plan = SPPlan(name, check, shards, attention, agreed)

- shards: module path -> entries, or -> Gather(dim). "" is the transformer's own forward,
  "blocks.*" every child of a block list. An entry's key is an argument name of the module's
  forward (its input is split) or an output index / OUTPUT (its output is split); its value
  is a Split, or a function (tensor, ctx) -> this rank's shard. Only the image sequence is
  ever split: text is replicated on every rank and enters attention as joint tokens.
- attention: module pattern -> Attention(kind, qkv). "self": one stream over the sharded
  image tokens; "joint": image and text given as two streams; "prefix": one stream holding
  the text before the image shard (Flux's single-stream blocks); "cross": text keys and local
  queries, left alone. qkv is the model's projection, qk-norm and rotary (see processors.py).
- check(adapter, args) -> Call: validates a forward's arguments ({name: value}) and says
  what the blocks need (global image tokens, text tokens, text mask); agreed names the
  arguments whose fingerprints every rank must share.

`image_side` derives the shard entries from a diffusers model's `_cp_plan`: diffusers'
context parallelism splits text and image alike; ringsp keeps every text entry whole.
"""
from dataclasses import dataclass, field

import torch

from ringsp.parallel import shard_sequence

OUTPUT = "<output>"  # key of an entry that splits a module's whole (non-tuple) output
# diffusers' names of text-side arguments: replicated, never split
TEXT_ARGS = frozenset({"encoder_hidden_states", "encoder_hidden_states_mask", "encoder_attention_mask", "txt_ids"})
KINDS = ("self", "joint", "prefix", "cross")


@dataclass(frozen=True)
class Split:
    """This rank's shard along `dim` (padded at the end of the sequence on the last ranks).
    A tensor of another rank than expected_dims stays whole (diffusers' rule: Wan's timestep
    is split only when it is per token); None stays None; a list is split element-wise."""
    dim: int
    expected_dims: int | None = None

    def __call__(self, x, ctx):
        if isinstance(x, (list, tuple)):
            return [self(t, ctx) for t in x]
        if x is None or (self.expected_dims is not None and x.dim() != self.expected_dims):
            return x
        return shard_sequence(x, ctx, dim=self.dim)


@dataclass(frozen=True)
class Gather:
    """The module's output is gathered along `dim` from every rank and cut to the image tokens."""
    dim: int


@dataclass(frozen=True)
class Attention:
    kind: str
    qkv: object = None  # (attn, states[, text states], rotary) -> (q, k, v); see processors.py

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"attention kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class Call:
    """What a plan's check learnt about the forward in flight."""
    seq_len: int                # global image tokens
    text_len: int = 0           # text tokens in front of the image shard ("prefix" attention)
    text: object = None         # TextPlan of the joint text mask (text_mask.py), or None: all valid
    agreed: dict = field(default_factory=dict)  # more fields every rank must share (a mask's digest)


@dataclass(frozen=True)
class SPPlan:
    name: str                   # in messages: "Wan", "Flux"
    check: object               # (adapter, args) -> Call
    shards: dict
    attention: dict
    agreed: tuple = ()          # forward arguments fingerprinted across ranks


def image_side(cp_plan, text_outputs=(), replace=None):
    """The shard entries of a diffusers `_cp_plan` that ringsp keeps: text arguments
    (TEXT_ARGS) and the outputs named in text_outputs ((path, index)) are dropped, because
    ringsp replicates text. replace {cp path: {path: entries}} moves an entry, e.g. off a
    repeated block whose hook would run inside its compiled graph (a second graph for block 0)."""
    from diffusers.models._modeling_parallel import ContextParallelOutput

    shards = {}
    for path, entries in cp_plan.items():
        if isinstance(entries, ContextParallelOutput):
            shards[path] = Gather(entries.gather_dim)
            continue
        kept = {}
        for key, e in entries.items():
            if e.split_output != isinstance(key, int):
                raise NotImplementedError(f"_cp_plan entry {path!r}[{key!r}]: ringsp splits inputs by name and "
                                          "outputs by index only")
            if key not in TEXT_ARGS and (path, key) not in text_outputs:
                kept[key] = Split(e.split_dim, e.expected_dims)
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


def fingerprint(value):
    """An argument as the ranks compare it: tensors by shape, dtype and device, other values by repr."""
    from ringsp.parallel.agreement import describe

    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [describe(v) for v in value]
    return describe(value) if value is None or isinstance(value, torch.Tensor) else repr(value)
