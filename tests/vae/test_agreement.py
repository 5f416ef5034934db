"""All ranks fail together when one rank's input is bad or the ranks disagree."""
import torch
import torch.distributed as dist

from ringsp.vae.agreement import Field, agree
from tests.mp_pool import run_distributed


def _outcome(fields, error=None):
    try:
        agree(None, torch.device("cpu"), fields, error)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)
    return "ok"


def _cases():
    rank = dist.get_rank()
    nan = float("nan")
    return {
        "same": _outcome([Field("shape", (1, 16, 3)), Field("sum", [nan, 2.0 + rank * 1e-12], rel_tol=1e-7)]),
        "shape differs": _outcome([Field("shape", (1, 16, 3 + (rank == 2)))]),
        "checksum differs": _outcome([Field("sum", [1.0 + rank * 1e-3], rel_tol=1e-7)]),
        "one rank bad": _outcome([], TypeError("latents must be a tensor")) if rank == 1
        else _outcome([Field("shape", (1, 2))]),
    }


def test_every_rank_sees_the_same_verdict():
    out = run_distributed(3, _cases)
    assert [o["same"] for o in out] == ["ok"] * 3
    for name, field in (("shape differs", "shape"), ("checksum differs", "sum")):
        for rank, (kind, message) in enumerate(out[r][name] for r in range(3)):
            assert kind == "ValueError" and f"ranks disagree on {field}" in message
    assert out[1]["one rank bad"] == ("TypeError", "latents must be a tensor")
    for r in (0, 2):
        kind, message = out[r]["one rank bad"]
        assert kind == "ValueError" and "rank 1 of 3 rejected its input: TypeError: latents must be a tensor" in message
