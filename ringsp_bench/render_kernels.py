"""Renders a ringsp_bench.attn_kernels JSON report as the markdown table used in bench/RESULTS.md.

    python -m ringsp_bench.render_kernels bench/results/kernels_h100.json
"""
import json
import sys

_COLUMNS = ["attn_fwd", "step_chain4", "attn_fwd[cudnn]", "step_chain4[cudnn]", "attn_fwd[auto]", "step_chain4[auto]",
            "cudnn", "flash", "cudnn4+eager_merge", "cudnn4+fused_merge"]
FA4_COLUMNS = ["attn_fwd[fa4]", "step_chain4[fa4]", "fa4"]  # reports of runs with flash-attn-4 installed
HOPPER_COLUMNS = ["attn_fwd[hopper]", "step_chain4[hopper]"]  # reports of sm90 runs with ringsp's Hopper kernel


def render(report):
    meta = report["meta"]
    has = lambda c: any(c in e["tflops"] for e in report["shapes"].values())  # noqa: E731
    COLUMNS = _COLUMNS + [c for extra in (FA4_COLUMNS, HOPPER_COLUMNS) if has(extra[0]) for c in extra]
    lines = [f"Device {meta['device']}, torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, "
             f"cuDNN {meta['cudnn']}, {meta['date']}; `{meta['command']}`", "",
             "| shape (B=1, bf16) | " + " | ".join(COLUMNS) + " | fwd / cuDNN | chain4 / fwd | chain4 / fwd (auto) "
             "| auto / best (fwd) | auto / best (chain) | fwd rel err |",
             "|---" * (len(COLUMNS) + 7) + "|"]
    for name, e in report["shapes"].items():
        cells = [f"{e['tflops'][c]:.0f}" if c in e["tflops"] else "" for c in COLUMNS]
        cells += [f"{e['ratio_to_cudnn']['attn_fwd']:.3f}", f"{e['chain_over_fwd']:.3f}",
                  f"{e['chain_over_fwd_auto']:.3f}" if "chain_over_fwd_auto" in e else ""]
        best = e.get("auto_vs_best", {})  # older reports lack it
        cells += [f"{best[op]:.3f}" if op in best else "" for op in ("fwd", "chain")]
        cells += [f"{e['check']['fwd_rel_err']:.1e}"]
        lines.append(f"| {name} S={e['S']} H={e['H']} D={e['D']} | " + " | ".join(cells) + " |")
    sweeps = [(n, e["sweep_tflops"]) for n, e in report["shapes"].items() if "sweep_tflops" in e]
    if sweeps:
        configs = list(dict.fromkeys(c for _, sw in sweeps for c in sw))
        lines += ["", "Fixed Triton configurations (TFLOP/s; `chain4` rows: init_state + 4 steps + finalize):", "",
                  "| config | " + " | ".join(n for n, _ in sweeps) + " |", "|---" * (len(sweeps) + 1) + "|"]
        for c in configs:
            vals = [s.get(c, "n/a") for _, s in sweeps]
            lines.append(f"| {c} | " + " | ".join(f"{v:.0f}" if isinstance(v, float) else str(v)[:40] for v in vals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(render(json.load(f)))
