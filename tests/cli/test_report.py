"""The report: aggregates computed from parts, check_report catching stale aggregates, tables."""
import copy
import json
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringsp.cli.report import build_report, check_report, format_comparison, format_memory_table, format_stage_table
from ringsp.cli.timing import STAGES

PARALLEL = {"num_gpus": 2, "ulysses_degree": 1, "ring_degree": 2, "cfg_degree": 1}


def _gpu_mem(rank, reserved, allocated):
    return {"rank": rank, "device": f"cuda:{rank}", "kind": "cuda", "peak_reserved_gib": reserved,
            "peak_allocated_gib": allocated, "peak_rss_gib": 3.0}


def _report(stages=None, steps=(0.5, 0.7, 0.6), memory=None):
    stages = stages or {s: 0.1 * (i + 1) for i, s in enumerate(STAGES)}
    stages = dict(stages, Denoising=max(stages["Denoising"], sum(steps)))
    memory = memory or [_gpu_mem(1, 21.0, 14.0), _gpu_mem(0, 20.0, 15.0)]
    return build_report(stages, list(steps), memory, parallel=PARALLEL)


times = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(stage_times=st.lists(times, min_size=len(STAGES), max_size=len(STAGES)),
       steps=st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=0, max_size=12))
def test_aggregates_are_computed_from_parts(stage_times, steps):
    report = _report(dict(zip(STAGES, stage_times)), steps)
    report = json.loads(json.dumps(report))  # what a reader of the file sees
    assert check_report(report) == []
    assert report["total_s"] == pytest.approx(sum(report["stages_s"].values()), rel=1e-12, abs=1e-12)
    if steps:
        assert report["denoise"]["median_s"] == statistics.median(steps)
        assert report["denoise"]["mean_s"] == pytest.approx(sum(steps) / len(steps))
    else:
        assert report["denoise"]["mean_s"] is None


def test_memory_is_sorted_by_rank_and_derived():
    report = _report()
    assert [m["rank"] for m in report["memory"]["per_rank"]] == [0, 1]
    assert report["memory"]["per_rank"][1]["overhead_gib"] == 7.0
    assert report["memory"]["per_rank"][1]["overhead_ratio"] == pytest.approx(7 / 21)
    assert report["memory"]["max"] == {"peak_reserved_gib": 21.0, "peak_allocated_gib": 15.0, "overhead_gib": 7.0,
                                       "peak_rss_gib": 3.0}


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["stages_s"].__setitem__("Decoding", 9.0), "total_s"),  # the sglang PR #23056 kind of edit
    (lambda r: r["denoise_step_s"].__setitem__(0, 0.1), "denoise.mean_s"),
    (lambda r: r["denoise"].__setitem__("median_s", 0.0), "denoise.median_s"),
    (lambda r: r["memory"]["per_rank"][0].__setitem__("peak_allocated_gib", 1.0), "overhead_gib"),
    (lambda r: r["stages_s"].__setitem__("Denoising", 0.01), "more than the Denoising"),
    (lambda r: r["stages_s"].pop("TextEncoding"), "stages_s has"),
    (lambda r: r["stages_s"].__setitem__("LatentPreparation", -1.0), "not a non-negative"),
    (lambda r: r.pop("memory"), "malformed report"),
])
def test_stale_or_broken_reports_are_caught(edit, expected):
    report = copy.deepcopy(_report())
    edit(report)
    problems = check_report(report)
    assert any(expected in p for p in problems), problems


def test_missing_stage_is_refused():
    with pytest.raises(ValueError, match="missing"):
        build_report({"Denoising": 1.0}, [], [], parallel=PARALLEL)


def test_tables():
    report = _report()
    table = format_stage_table(report)
    assert "| u1r2 (s) |" in table and all(s in table for s in STAGES)
    assert f"{report['total_s']:.4f}" in table and "median 0.6000 s" in table
    mem = format_memory_table(report)
    assert "33.3%" in mem and "25.0%" in mem
    cpu = build_report(report["stages_s"], [0.5], [{"rank": 0, "device": "cpu", "kind": "cpu",
                       "peak_reserved_gib": None, "peak_allocated_gib": None, "peak_rss_gib": 1.5}], parallel=PARALLEL)
    assert "n/a" in format_memory_table(cpu) and "1.50" in format_memory_table(cpu)
    slow = build_report({s: 2 * t for s, t in report["stages_s"].items()}, [0.5, 0.7, 0.6],
                        report["memory"]["per_rank"], parallel={**PARALLEL, "ring_degree": 1, "num_gpus": 1})
    cmp = format_comparison([slow, report])
    assert "Speedup u1r2" in cmp and "2.00x" in cmp
