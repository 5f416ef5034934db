"""Peak memory entries: RSS on CPU (allocator fields None), derived overhead fields."""
import pytest
import torch

from ringsp.cli.memory import derived_memory, peak_memory


def test_cpu_entry():
    blob = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB touched: the peak RSS is at least that
    entry = peak_memory("cpu", rank=3)
    assert entry["rank"] == 3 and entry["kind"] == "cpu"
    assert entry["peak_rss_gib"] >= blob.numel() / 2**30
    assert entry["peak_reserved_gib"] is None and entry["overhead_ratio"] is None


def test_derived_overhead():
    assert derived_memory({"peak_reserved_gib": 20.0, "peak_allocated_gib": 15.0}) == \
        {"overhead_gib": 5.0, "overhead_ratio": 0.25}
    assert derived_memory({"peak_reserved_gib": None, "peak_allocated_gib": 1.0})["overhead_gib"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_entry():
    x = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    entry = peak_memory("cuda", rank=0)
    assert entry["peak_allocated_gib"] >= x.numel() / 2**30
    assert entry["peak_reserved_gib"] >= entry["peak_allocated_gib"]
    assert entry["overhead_gib"] == pytest.approx(entry["peak_reserved_gib"] - entry["peak_allocated_gib"])
