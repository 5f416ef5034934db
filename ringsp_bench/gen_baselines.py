"""Writes bench/baselines/<case>.json from measured reports, and checks baseline files.

    python -m ringsp_bench.gen_baselines e2e.json                 # a ringsp_bench.e2e_generate --json file
    python -m ringsp_bench.gen_baselines run.json --out DIR       # a `ringsp generate --json` report
    python -m ringsp_bench.gen_baselines --check                  # check every bench/baselines/*.json

Baselines are never typed: every number in one is either a measured part copied from a
report (stage times, per-step times, per-rank memory peaks) or an aggregate computed here
from those parts (expected_e2e_ms = sum of the stages; the mean and median of the steps;
memory maxima). A report whose own aggregates disagree with its parts (edited by hand) is
refused. `check_baseline` recomputes every aggregate of a baseline file, so a stage edited
without its total is caught (tests/bench/test_baselines.py runs it on every file).
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys

from ringsp.cli.report import check_report, config_label
from ringsp.cli.timing import STAGES

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

BASELINE_DIR = os.path.join(_ROOT, "bench", "baselines")
SCHEMA = "ringsp.baseline/1"
GENERATOR = "ringsp_bench.gen_baselines"
MEASURERS = ("ringsp generate",)
REL_TOL = 1e-9


def case_name(model, request, parallel, device):
    """e.g. wan2.1-t2v-1.3b_832x480x81_s4_cuda2_u1r2 (file-name safe)."""
    r, p = request, parallel
    name = (f"{model}_{r['width']}x{r['height']}x{r['num_frames']}_s{r['steps']}_"
            f"{device['type']}{p['num_gpus']}_{config_label(p)}")
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)


def baseline_from_report(report, source_file):
    """A baseline dict from one measured report (ValueError if the report is not a consistent,
    measured one)."""
    if report.get("measured_by") not in MEASURERS:
        raise ValueError(f"{source_file}: not a measured report (measured_by={report.get('measured_by')!r})")
    problems = check_report(report)
    if problems:
        raise ValueError(f"{source_file}: report is inconsistent, refusing it: {'; '.join(problems)}")
    parts = {
        "stages_ms": {s: 1000.0 * report["stages_s"][s] for s in STAGES},
        "denoise_step_ms": [1000.0 * t for t in report["denoise_step_s"]],
        "memory_per_rank_gib": [
            {k: m.get(k) for k in ("rank", "peak_reserved_gib", "peak_allocated_gib", "peak_rss_gib")}
            for m in report["memory"]["per_rank"]],
    }
    case = case_name(report["model"]["name"], report["request"], report["parallel"], report["device"])
    base = {"schema": SCHEMA, "case": case, "generated_by": GENERATOR, "model": report["model"]["name"],
            "source": {"file": os.path.basename(source_file), "measured_by": report["measured_by"],
                       "date": report.get("date"), "device": report.get("device"), "versions": report.get("versions")},
            "request": report["request"], "parallel": report["parallel"], **parts}
    base.update(baseline_aggregates(base))
    return base


def baseline_aggregates(base):
    stages, steps = base["stages_ms"], base["denoise_step_ms"]
    mem = base["memory_per_rank_gib"]
    return {
        "expected_e2e_ms": math.fsum(stages[s] for s in STAGES),
        "expected_avg_denoise_ms": math.fsum(steps) / len(steps) if steps else None,
        "expected_median_denoise_ms": statistics.median(steps) if steps else None,
        "expected_peak_reserved_gib": _max(m["peak_reserved_gib"] for m in mem),
        "expected_peak_allocated_gib": _max(m["peak_allocated_gib"] for m in mem),
        "expected_peak_rss_gib": _max(m["peak_rss_gib"] for m in mem),
    }


def _max(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def check_baseline(base):
    """Problems of a baseline dict (empty: every aggregate equals the one its parts give)."""
    try:
        if base.get("schema") != SCHEMA or base.get("generated_by") != GENERATOR:
            return [f"not a baseline written by {GENERATOR} (schema {base.get('schema')!r})"]
        if sorted(base["stages_ms"]) != sorted(STAGES):
            return [f"stages_ms has {sorted(base['stages_ms'])}, expected {sorted(STAGES)}"]
        expected = baseline_aggregates(base)
    except (KeyError, TypeError, AttributeError) as exc:
        return [f"malformed baseline: {exc!r}"]
    problems = []
    for key, value in expected.items():
        stored = base.get(key)
        same = stored is None and value is None or (
            isinstance(stored, (int, float)) and value is not None
            and math.isclose(stored, value, rel_tol=REL_TOL, abs_tol=1e-12))
        if not same:
            problems.append(f"{key} is {stored!r} but its parts give {value!r}")
    if base["case"] != case_name(base["model"], base["request"], base["parallel"], base["source"]["device"]):
        problems.append(f"case {base['case']!r} does not match its request/parallel/device")
    return problems


def reports_in(path):
    """The reports in a `ringsp generate --json` file or a ringsp_bench.e2e_generate --json file."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and data.get("bench") == "e2e":
        return data.get("runs", [])
    return [data]


def write_baselines(paths, out_dir):
    written = []
    for path in paths:
        for report in reports_in(path):
            base = baseline_from_report(report, path)
            os.makedirs(out_dir, exist_ok=True)
            target = os.path.join(out_dir, base["case"] + ".json")
            with open(target, "w", encoding="utf-8") as f:
                json.dump(base, f, indent=2)
                f.write("\n")
            written.append(target)
    return written


def check_dir(folder):
    """{file: problems} for every *.json in folder."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path, encoding="utf-8") as f:
            out[path] = check_baseline(json.load(f))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="*",
                   help="measured JSON reports (ringsp generate --json, ringsp_bench.e2e_generate --json)")
    p.add_argument("--out", default=BASELINE_DIR)
    p.add_argument("--check", action="store_true", help="check the baseline files in --out instead")
    args = p.parse_args(argv)
    if args.check:
        results = check_dir(args.out)
        for path, problems in results.items():
            print(f"{'OK ' if not problems else 'BAD'} {path}" + "".join(f"\n    {x}" for x in problems))
        return 0 if all(not x for x in results.values()) else 1
    if not args.reports:
        p.error("give measured report files (or --check)")
    try:
        written = write_baselines(args.reports, args.out)
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        print(f"gen_baselines: error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
