"""ringsp_bench.fp8 on CPU: its accuracy helpers and report printing (the run needs a GPU)."""
import torch

import ringsp_kernels as rk
from ringsp_bench import fp8 as bench


def test_float64_rows_is_attention_of_those_rows():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, n, 2, 16, generator=g) for n in (40, 70, 70))
    idx = torch.tensor([0, 7, 39])
    torch.testing.assert_close(bench.float64_rows(q, k, v, idx), rk.reference_attention(q, k, v)[0][:, idx])


def test_accuracy_reports_each_output_and_failures():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 300, 2, 16, generator=g) for _ in range(3))
    exact = rk.reference_attention(q, k, v)[0]

    def broken():
        raise RuntimeError("no kernel")

    res = bench.accuracy({"exact": lambda: exact, "noisy": lambda: exact * 1.01, "timing only": lambda: None,
                          "broken": broken}, q, k, v)
    assert res["exact"]["cos"] > 0.999999 and res["exact"]["rel"] < 1e-6
    assert abs(res["noisy"]["rel"] - 0.01) < 1e-6
    assert "timing only" not in res and res["broken"].startswith("failed: RuntimeError")


def test_channel_outliers_offset_every_eighth_channel():
    k = torch.zeros(1, 3, 1, 32, dtype=torch.bfloat16)
    off = bench.with_channel_outliers(k)[0, 0, 0].float()
    assert off[0] == 30 and off[8] == -30 and off[16] == 30 and off[1] == 0 and off.dtype == torch.float32


def test_print_entry(capsys):
    entry = {"S": 10, "H": 2, "D": 64, "ms": {"fp8 attn_fwd": 1.0, "cudnn": 2.0, "sage": "failed: X"},
             "tflops": {"fp8 attn_fwd": 100.0, "cudnn": 50.0}, "ratio_to_cudnn": {"fp8 attn_fwd": 2.0, "cudnn": 1.0},
             "accuracy": {"fp8 attn_fwd": {"cos": 0.999, "rel": 0.05}}, "accuracy_k_outliers": {},
             "fp8_chain_over_fwd": 1.02}
    bench.print_entry("x", entry)
    out = capsys.readouterr().out
    assert "x2.000 of cuDNN" in out and "rel 5.00e-02" in out and "failed: X" in out
    assert "fp8_chain_over_fwd=1.020" in out
