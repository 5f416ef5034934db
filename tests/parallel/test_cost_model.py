"""The cost model behind ParallelConfig.auto: monotone in the right directions."""
from dataclasses import replace

from ringsp.parallel.cost_model import CONSTANTS, attention_time, factor_pairs


def test_factor_pairs():
    assert factor_pairs(6) == [(1, 6), (2, 3), (3, 2), (6, 1)]
    assert factor_pairs(1) == [(1, 1)]


def test_more_devices_take_less_time():
    assert attention_time(32760, 12, 1, 4) < attention_time(32760, 12, 1, 2) < attention_time(32760, 12, 1, 1)
    assert attention_time(32760, 12, 4, 1) < attention_time(32760, 12, 2, 1)


def test_head_padding_costs_compute():
    # 12 heads over 8 Ulysses ranks are padded to 16: as slow as 16 heads
    assert attention_time(32760, 12, 8, 1) == attention_time(32760, 16, 8, 1)


def test_slow_links_favour_the_ring():
    slow = replace(CONSTANTS, a2a_bytes_per_s=1e9)
    assert attention_time(32760, 12, 4, 1, constants=slow) > attention_time(32760, 12, 1, 4, constants=slow)
