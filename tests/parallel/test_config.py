"""ParallelConfig validation and the choice made by ParallelConfig.auto."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringsp.parallel import ParallelConfig


def test_defaults_and_sizes():
    cfg = ParallelConfig(ulysses_degree=2, ring_degree=3, cfg_degree=2)
    assert (cfg.sp_degree, cfg.world_size) == (6, 12)
    assert ParallelConfig().world_size == 1


@pytest.mark.parametrize("kwargs,error,match", [
    ({"ulysses_degree": 0}, ValueError, "ulysses_degree must be >= 1"),
    ({"ring_degree": -2}, ValueError, "ring_degree"),
    ({"cfg_degree": 1.0}, TypeError, "cfg_degree must be an int"),
    ({"ring_degree": True}, TypeError, "ring_degree must be an int"),
])
def test_invalid_degrees(kwargs, error, match):
    with pytest.raises(error, match=match):
        ParallelConfig(**kwargs)


@settings(max_examples=40, deadline=None)
@given(world=st.integers(1, 16), heads=st.integers(1, 64), seq=st.integers(1, 200_000), cfg=st.sampled_from([1, 2]))
def test_auto_returns_a_valid_split(world, heads, seq, cfg):
    if world % cfg:
        with pytest.raises(ValueError, match="does not divide"):
            ParallelConfig.auto(world, heads, seq, cfg_degree=cfg)
        return
    chosen = ParallelConfig.auto(world, heads, seq, cfg_degree=cfg)
    assert chosen.world_size == world and chosen.cfg_degree == cfg


def test_auto_sanity():
    assert ParallelConfig.auto(1, 12, 4096) == ParallelConfig()
    # heads divide the world and the sequence is long: Ulysses' all-to-all is cheap
    assert ParallelConfig.auto(4, 12, 75600).ulysses_degree == 4
    # a single head cannot be split: everything goes to the ring
    assert ParallelConfig.auto(4, 1, 75600) == ParallelConfig(ring_degree=4)
    # 12 heads on 8 ranks would pad to 16: USP keeps Ulysses where heads divide
    assert ParallelConfig.auto(8, 12, 75600) == ParallelConfig(ulysses_degree=4, ring_degree=2)


def test_auto_argument_errors():
    with pytest.raises(ValueError, match="seq_len"):
        ParallelConfig.auto(2, 12, 0)
    with pytest.raises(TypeError, match="num_heads"):
        ParallelConfig.auto(2, "12", 100)
