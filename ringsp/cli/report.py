"""The generation report: measured parts, aggregates computed from them, tables, checks.

A report holds measured parts only (stage seconds, per-step seconds, per-rank memory
peaks) plus aggregates that `aggregates()` computes from those parts: total = sum of the
stages, step count / sum / mean / median, overhead = reserved - allocated per rank, and the
maxima over ranks. `check_report()` recomputes every aggregate and lists what disagrees,
so a hand-edited number (a stage changed, the total left alone) is caught.
"""
import math
import statistics

from .memory import derived_memory
from .timing import STAGES

SCHEMA = "ringsp.generate.report/1"
# Relative tolerance of aggregate checks: values pass through JSON, which keeps floats exact,
# so only summation order could differ.
REL_TOL = 1e-9
_MEMORY_FIELDS = ("peak_reserved_gib", "peak_allocated_gib", "overhead_gib", "peak_rss_gib")


def build_report(stages, steps, memory, **meta):
    """A report dict from measured parts; `meta` (model, request, parallel, versions, ...) is
    copied in as is."""
    missing = [s for s in STAGES if s not in stages]
    if missing:
        raise ValueError(f"stages is missing {missing}")
    per_rank = [dict(m, **derived_memory(m)) for m in sorted(memory, key=lambda m: m["rank"])]
    report = {"schema": SCHEMA, **meta, "stages_s": {s: float(stages[s]) for s in STAGES},
              "denoise_step_s": [float(t) for t in steps], "memory": {"per_rank": per_rank}}
    return with_aggregates(report)


def with_aggregates(report):
    """The report with every aggregate (re)computed from its parts."""
    agg = aggregates(report)
    out = dict(report)
    out["total_s"] = agg["total_s"]
    out["denoise"] = agg["denoise"]
    out["memory"] = dict(report["memory"], max=agg["memory_max"])
    return out


def aggregates(report):
    stages, steps = report["stages_s"], report["denoise_step_s"]
    per_rank = report["memory"]["per_rank"]
    return {
        "total_s": math.fsum(stages[s] for s in STAGES),
        "denoise": {
            "steps": len(steps),
            "sum_s": math.fsum(steps),
            "mean_s": math.fsum(steps) / len(steps) if steps else None,
            "median_s": statistics.median(steps) if steps else None,
        },
        "memory_max": {f: _max_or_none(m.get(f) for m in per_rank) for f in _MEMORY_FIELDS},
    }


def _max_or_none(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def check_report(report):
    """Problems found in a report (empty list: consistent). Checks that every aggregate equals
    the one computed from the parts, the stage list is complete, times are non-negative,
    the per-step times fit inside the Denoising stage, and per-rank overheads are derived."""
    problems = []
    try:
        stages, steps = report["stages_s"], report["denoise_step_s"]
        per_rank = report["memory"]["per_rank"]
        if sorted(stages) != sorted(STAGES):
            return [f"stages_s has {sorted(stages)}, expected {sorted(STAGES)}"]
        agg = aggregates(report)
    except (KeyError, TypeError) as exc:
        return [f"malformed report: missing or bad field {exc}"]
    for name, value in list(stages.items()) + [(f"step {i}", t) for i, t in enumerate(steps)]:
        if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            problems.append(f"{name}: time {value!r} is not a non-negative number")
    _compare(problems, "total_s", report.get("total_s"), agg["total_s"])
    for key, value in agg["denoise"].items():
        _compare(problems, f"denoise.{key}", report.get("denoise", {}).get(key), value)
    for key, value in agg["memory_max"].items():
        _compare(problems, f"memory.max.{key}", report["memory"].get("max", {}).get(key), value)
    if steps and agg["denoise"]["sum_s"] > stages["Denoising"] * (1 + 1e-6) + 1e-9:
        problems.append(f"per-step times sum to {agg['denoise']['sum_s']:.6f}s, more than the Denoising "
                        f"stage's {stages['Denoising']:.6f}s")
    for m in per_rank:
        for key, value in derived_memory(m).items():
            _compare(problems, f"memory rank {m.get('rank')} {key}", m.get(key), value)
    return problems


def _compare(problems, name, stored, computed):
    if stored is None and computed is None:
        return
    if stored is None or computed is None or not isinstance(stored, (int, float)) \
            or not math.isclose(stored, computed, rel_tol=REL_TOL, abs_tol=1e-12):
        problems.append(f"{name} is {stored!r} but its parts give {computed!r}")


# ------------------------------------------------------------------------------ tables


def config_label(parallel):
    """'u1r2' / 'u2r1c2': the parallel config's short name, as in the stage tables."""
    label = f"u{parallel['ulysses_degree']}r{parallel['ring_degree']}"
    return label + (f"c{parallel['cfg_degree']}" if parallel.get("cfg_degree", 1) > 1 else "")


def format_stage_table(report):
    label = config_label(report["parallel"])
    rows = [(s, f"{report['stages_s'][s]:.4f}") for s in STAGES] + [("Total", f"{report['total_s']:.4f}")]
    lines = _table(["Stage / Metric", f"{label} (s)"], rows)
    d = report["denoise"]
    if d["steps"]:
        lines.append(f"Denoising steps: {d['steps']}, mean {d['mean_s']:.4f} s, median {d['median_s']:.4f} s "
                     f"(sum {d['sum_s']:.4f} s)")
    return "\n".join(lines)


def format_memory_table(report):
    per_rank = report["memory"]["per_rank"]
    if all(m["peak_reserved_gib"] is None for m in per_rank):
        rows = [(str(m["rank"]), m["device"], f"{m['peak_rss_gib']:.2f}", "n/a", "n/a", "n/a", "n/a")
                for m in per_rank]
        note = "(CPU: no caching allocator, so reserved/allocated are n/a; peak RSS is the process's since start)"
    else:
        rows = [(str(m["rank"]), m["device"], f"{m['peak_rss_gib']:.2f}", f"{m['peak_reserved_gib']:.2f}",
                 f"{m['peak_allocated_gib']:.2f}", f"{m['overhead_gib']:.2f}", f"{100 * m['overhead_ratio']:.1f}%")
                for m in per_rank]
        note = "(peak reserved / allocated: the allocator's peaks during generation; overhead = reserved - allocated)"
    header = ["Rank", "Device", "Peak RSS (GiB)", "Peak reserved (GiB)", "Peak allocated (GiB)",
              "Overhead (GiB)", "Overhead ratio"]
    return "\n".join(_table(header, rows) + [note])


def format_comparison(reports, baseline=0):
    """Stage table of several reports side by side, with the speedup of each over `baseline`."""
    labels = [config_label(r["parallel"]) for r in reports]
    header = ["Stage / Metric"] + [f"{lab} (s)" for lab in labels] + \
             [f"Speedup {lab}" for i, lab in enumerate(labels) if i != baseline]
    rows = []
    for name, key in [(s, s) for s in STAGES] + [("Total", None)]:
        vals = [r["stages_s"][key] if key else r["total_s"] for r in reports]
        ref = vals[baseline]
        speed = [f"{ref / v:.2f}x" if v > 0 else "n/a" for i, v in enumerate(vals) if i != baseline]
        rows.append([name] + [f"{v:.4f}" for v in vals] + speed)
    return "\n".join(_table(header, rows))


def _table(header, rows):
    """Markdown table lines (pipes), numbers right-aligned, readable as plain text too."""
    cols = list(zip(header, *rows))
    widths = [max(len(str(c)) for c in col) for col in cols]
    fmt = lambda cells: "| " + " | ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return [fmt(header), sep] + [fmt(r) for r in rows]
