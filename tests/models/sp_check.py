"""The SP-vs-single-process comparison the Flux and LTX tests share (run inside the tests.mp_pool
workers): diffusers' own forward, the SP forward, then diffusers' forward again after disabling SP."""
import math

import torch

import ringsp
from ringsp.parallel import ParallelConfig, ParallelContext

from .wan_cases import TOL, rel_error


def hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def compare(ctx, model, kwargs, forward, first_block):
    """(rel. errors of every tensor forward returns, image tokens first_block saw, the SP
    forward's tensors after the first (text streams), model exactly as before afterwards)."""
    ref = forward(model, kwargs)
    processors, hooks = model.attn_processors, hook_counts(model)
    seen = []
    spy = first_block.register_forward_pre_hook(
        lambda m, args, kw: seen.append((kw.get("hidden_states", args[0] if args else None)).shape[1]),
        with_kwargs=True)
    ringsp.enable_sequence_parallel(model, ctx)
    try:
        out = forward(model, kwargs)
    finally:
        ringsp.disable_sequence_parallel(model)
        spy.remove()
    again = forward(model, kwargs)
    restored = (all(torch.equal(a, b) for a, b in zip(again, ref)) and hooks == hook_counts(model)
                and all(p is model.attn_processors[n] for n, p in processors.items()))
    assert all(o.shape == r.shape for o, r in zip(out, ref))
    return [rel_error(o, r) for o, r in zip(out, ref)], seen[0], out[1:], restored


def assert_matches(per_rank, cases, token_counts):
    """Every rank's compare() results: within TOL, blocks ran on a shard, the model restored,
    and the replicated text streams equal on every rank, bit for bit."""
    world = len(per_rank)
    for i, (case, tokens) in enumerate(zip(cases, token_counts)):
        for rank in per_rank:
            rels, seen, _, restored = rank[i]
            assert max(rels) <= TOL, (case, rels)
            assert seen == math.ceil(tokens / world), (case, seen)
            assert restored, case
        texts = [rank[i][2] for rank in per_rank]
        assert all(torch.equal(a, b) for t in texts for a, b in zip(t, texts[0])), case


def errors_under_sp(ctx, model, forward, good, bad_calls):
    """{name: (type, message) or None} of every bad call under SP, and "usable_after": the
    output shape of a good call once SP is disabled again."""
    ringsp.enable_sequence_parallel(model, ctx)
    out = {key: error_of(forward, model, kwargs) for key, kwargs in bad_calls.items()}
    ringsp.disable_sequence_parallel(model)
    out["usable_after"] = tuple(forward(model, good)[0].shape)
    return out


def offline_ctx():
    """A context of one rank with no process group (enabling runs no collective)."""
    cpu = torch.device("cpu")
    return ParallelContext(ParallelConfig(), None, 0, 1, cpu, None, 0, None, 0, None, 0, None, 0)


def error_of(fn, *args):
    """(exception type name, message) of fn(*args), or None."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc)
    return None
