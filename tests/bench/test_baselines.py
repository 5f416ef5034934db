"""Every bench/baselines/*.json is self-consistent (each aggregate equals what its parts give),
and the chain that writes them works: a tiny CPU run of ringsp_bench.e2e_generate -> gen_baselines ->
a baseline that checks out. Hand edits of the kind that leave a total stale are caught."""
import copy
import glob
import json
import os

import pytest

pytest.importorskip("diffusers")

from ringsp_bench import e2e_generate as e2e  # noqa: E402
from ringsp_bench import gen_baselines as gen  # noqa: E402


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(gen.BASELINE_DIR, "*.json"))) or [None])
def test_committed_baselines_are_consistent(path):
    if path is None:  # none committed yet: the generated one below is the check
        assert gen.check_dir(gen.BASELINE_DIR) == {}
        return
    with open(path, encoding="utf-8") as f:
        assert gen.check_baseline(json.load(f)) == [], path


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Baselines made from a measured tiny CPU run of ringsp_bench.e2e_generate (1 and 2 gloo processes)."""
    tmp = tmp_path_factory.mktemp("e2e")
    report = str(tmp / "e2e.json")
    code = e2e.main(["--device", "cpu", "--model", "tiny-wan", "--configs", "u1r1,u1r2", "--height", "48",
                     "--width", "80", "--num-frames", "5", "--steps", "2", "--warmup-steps", "0", "--json", report])
    assert code == 0
    written = gen.write_baselines([report], str(tmp / "baselines"))
    return report, [json.load(open(p, encoding="utf-8")) for p in written]


def test_generated_baselines_are_consistent(generated):
    report_path, bases = generated
    assert [b["case"] for b in bases] == ["tiny-wan_80x48x5_s2_cpu1_u1r1", "tiny-wan_80x48x5_s2_cpu2_u1r2"]
    for base in bases:
        assert gen.check_baseline(base) == []
        assert len(base["denoise_step_ms"]) == 2 and base["expected_e2e_ms"] > 0
    checked = gen.check_dir(os.path.join(os.path.dirname(report_path), "baselines"))
    assert len(checked) == 2 and all(problems == [] for problems in checked.values())


@pytest.mark.parametrize("edit, stale", [
    (lambda b: b["stages_ms"].__setitem__("Decoding", b["stages_ms"]["Decoding"] * 2), "expected_e2e_ms"),
    (lambda b: b["denoise_step_ms"].__setitem__(0, b["denoise_step_ms"][0] + 50.0), "expected_avg_denoise_ms"),
    (lambda b: b.__setitem__("expected_median_denoise_ms", 1.0), "expected_median_denoise_ms"),
    (lambda b: b["memory_per_rank_gib"][0].__setitem__("peak_rss_gib", 99.0), "expected_peak_rss_gib"),
    (lambda b: b["request"].__setitem__("steps", 50), "does not match"),
])
def test_hand_edits_are_caught(generated, edit, stale):
    base = copy.deepcopy(generated[1][1])
    edit(base)
    problems = gen.check_baseline(base)
    assert any(stale in p for p in problems), problems


def test_inconsistent_or_unmeasured_reports_are_refused(generated, tmp_path):
    with open(generated[0], encoding="utf-8") as f:
        report = json.load(f)["runs"][0]
    tampered = copy.deepcopy(report)
    tampered["stages_s"]["Denoising"] += 1.0  # total_s left stale
    with pytest.raises(ValueError, match="inconsistent"):
        gen.baseline_from_report(tampered, "x.json")
    typed = dict(report, measured_by="a text editor")
    with pytest.raises(ValueError, match="not a measured report"):
        gen.baseline_from_report(typed, "x.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tampered))
    assert gen.main([str(bad), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()
