"""ringsp_bench.hopper_persistent, the persistent candidate of the Hopper kernel: it compiles for
sm90 (any machine), and on an sm90 GPU it computes what the library kernel does."""
import pytest
import torch

from tests.kernels.test_hopper import aot

pytest.importorskip("triton.experimental.gluon")


@pytest.mark.slow
def test_the_candidate_compiles_for_sm90():
    got = aot("persistent", 128, 128, 2, 1, 1)  # TMA state: the largest shared-memory use
    assert got["wgmma"] and got["tma"] and got["setmaxnreg"] and got["shared"] <= 232448, got


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="needs an sm90 GPU")
@pytest.mark.parametrize("persistent,state_tma", [(True, True), (True, False), (False, True)])
def test_the_candidate_matches_float64(persistent, state_tma):
    from ringsp_bench import hopper_persistent
    from tests.kernels.test_ops_gpu import assert_rows_close, rand, reference

    g = torch.Generator(device="cuda").manual_seed(1)
    B, S, H, D = 2, 1000, 3, 128
    q, k, v = (rand((B, S, H, D), torch.bfloat16, g) for _ in range(3))
    acc = torch.zeros(B, S, H, D, device="cuda")
    lse = torch.full((B, H, S), float("-inf"), device="cuda")
    for a, b in ((0, 333), (333, S)):
        hopper_persistent.launch(q, k[:, a:b], v[:, a:b], acc, lse, D ** -0.5, b - a, True,
                                 persistent=persistent, state_tma=state_tma)
    assert_rows_close(acc.to(torch.bfloat16), lse, *reference(q, k, v), torch.bfloat16, "persistent candidate")
