"""parallel_vae_decode on 3 gloo ranks that disagree or fail locally: every rank raises the
same clear error and none is left waiting. The group has a short timeout, so a regression
into a hang fails within seconds here instead of stalling CI."""
import datetime
import time

import pytest
import torch
import torch.distributed as dist

import ringsp
from tests.mp_pool import run_distributed
from tests.vae.tiny import build_vae, latents

SHORT = datetime.timedelta(seconds=15)
FAST_S = 10.0  # below SHORT: nobody waited for a peer's timeout
_cache = {}


def _setup():
    """(group with a short timeout, tiny VAE), made once per worker."""
    if not _cache:
        _cache["group"] = dist.new_group(list(range(dist.get_world_size())), timeout=SHORT)
        _cache["vae"] = build_vae("wan21")
    return _cache["group"], _cache["vae"]


def _decode_with_rank_one_changed(case):
    group, vae = _setup()
    rank = dist.get_rank()
    z = latents("wan21", 1, 6, 3)
    if rank == 1 and case == "shape":
        z = latents("wan21", 1, 5, 3)
    elif rank == 1 and case == "dtype":
        z = z.to(torch.bfloat16)
    elif rank == 1 and case == "local error":
        z = z[:, :8]  # 8 channels: this rank's own check fails (the VAE's z_dim is 16)
    start = time.monotonic()
    try:
        ringsp.parallel_vae_decode(vae, z, group=group, min_parallel_pixels=0)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc), time.monotonic() - start
    return "no error", "", time.monotonic() - start


CASES = {
    "shape": "  latents shape: rank 0 has (1, 16, 1, 6, 3), rank 1 has (1, 16, 1, 5, 3), "
             "rank 2 has (1, 16, 1, 6, 3)",
    "dtype": "  latents dtype: rank 0 has float32, rank 1 has bfloat16, rank 2 has float32",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_disagreement_fails_on_every_rank_with_the_same_message(case):
    out = run_distributed(3, _decode_with_rank_one_changed, case, timeout=90)
    assert len({message for _, message, _ in out}) == 1, out  # the same words everywhere
    for kind, message, seconds in out:
        assert kind == "ValueError" and message.startswith("parallel_vae_decode: ranks disagree"), message
        assert CASES[case] in message and seconds < FAST_S, (message, seconds)


def test_a_local_error_on_one_rank_fails_every_rank():
    out = run_distributed(3, _decode_with_rank_one_changed, "local error", timeout=90)
    own = "latents have 8 channels but the VAE's z_dim is 16"
    assert out[1][:2] == ("ValueError", own)  # the rank's own exception, re-raised
    for rank in (0, 2):
        assert out[rank][:2] == ("ValueError", f"parallel_vae_decode: rank 1 of 3 rejected its arguments: "
                                               f"ValueError: {own}")
    assert max(seconds for _, _, seconds in out) < FAST_S


def _first_rank_decode_fails():
    """Below the threshold the first rank decodes alone; its failure reaches the others."""
    group, vae = _setup()
    z = latents("wan21", 1, 2, 2)
    failing = dist.get_rank() == 0
    if failing:
        vae.decode = _out_of_memory
    try:
        ringsp.parallel_vae_decode(vae, z, group=group)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc)
    finally:
        if failing:
            del vae.decode
    return "no error", ""


def _out_of_memory(*args, **kwargs):
    raise MemoryError("out of memory in the decoder")


def test_a_failed_decode_on_the_first_rank_fails_every_rank():
    out = run_distributed(3, _first_rank_decode_fails, timeout=90)
    assert out[0] == ("MemoryError", "out of memory in the decoder")
    for kind, message in out[1:]:
        assert kind == "RuntimeError" and "first rank failed" in message and "MemoryError: out of memory" in message
