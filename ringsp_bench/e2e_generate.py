"""End-to-end stage breakdown of `ringsp generate` on 1, 2 and 4 GPUs.

    python -m ringsp_bench.e2e_generate --json e2e.json
    python -m ringsp_bench.e2e_generate --configs u1r1,u1r2,u2r1,u2r2,u4r1,u2r1c2 --steps 4 --json e2e.json
    python -m ringsp_bench.e2e_generate --device cpu --model tiny-wan --configs u1r1,u1r2 --steps 2 \
        --json x.json  # script check

Each config is one fresh `python -m ringsp generate` (it spawns its own workers) on the same
request: Wan2.1-T2V-1.3B with dummy weights (published config, random bf16 values; a small
random text encoder stands in for UMT5-XXL, so TextEncoding is not representative),
480x832, 81 frames, --steps denoising steps (default 4) after an untimed warm-up of
--warmup-steps (default 1, which fills Triton autotune and cuDNN caches). Configs needing
more GPUs than present are skipped and listed as such. The table gives each stage per config
and the speedup over the first config; per-step mean/median and each rank's peak memory
are in the reports. --json writes the reports (each as `ringsp generate --json` writes
them: measured parts plus aggregates computed from them) with device, versions, date and
command. ringsp_bench.gen_baselines turns that file into bench/baselines/*.json.
--compile [regional|full] and --cuda-graphs are passed to every run (each report then
holds its compile warm-up, which is outside the stage times).

Without CUDA (and without --device cpu) it prints why and exits 0, writing a JSON that says so.
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

import torch

from ringsp.cli.report import check_report, config_label, format_comparison

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))  # the checkout: where runs start

CONFIG_RE = re.compile(r"^u(\d+)r(\d+)(c2)?$")
DEFAULT_CONFIGS = "u1r1,u1r2,u2r1,u2r2,u4r1"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="wan2.1-t2v-1.3b", help="a --model name of ringsp generate")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma list of u<U>r<R>[c2]")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--num-frames", type=int, default=81)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default=None, help="passed to ringsp generate (default: its own)")
    p.add_argument("--no-parallel-vae", action="store_true")
    p.add_argument("--compile", nargs="?", const="regional", choices=("regional", "full"), default=None,
                   help="passed to ringsp generate: torch.compile the transformer(s); its warm-up is reported apart")
    p.add_argument("--cuda-graphs", action="store_true", help="passed to ringsp generate (CUDA only)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per config")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.config_list = [parse_config(c, p) for c in args.configs.split(",") if c]
    if not args.config_list or args.steps < 1 or args.warmup_steps < 0:
        p.error("--configs must name at least one config, --steps >= 1, --warmup-steps >= 0")
    return args


def parse_config(text, parser=None):
    """'u2r1c2' -> (2, 1, 2)."""
    m = CONFIG_RE.match(text.strip())
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        msg = f"bad config {text!r}: expected u<U>r<R> or u<U>r<R>c2, e.g. u2r2"
        if parser is None:
            raise ValueError(msg)
        parser.error(msg)
    return int(m.group(1)), int(m.group(2)), 2 if m.group(3) else 1


def generate_argv(args, config, report_path):
    u, r, cfg = config
    model = ["--model", args.model] + ([] if args.model == "tiny-wan" else ["--dummy-weights"])
    argv = [sys.executable, "-m", "ringsp", "generate", *model, "--device", args.device,
            "--height", str(args.height), "--width", str(args.width), "--num-frames", str(args.num_frames),
            "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
            "--num-gpus", str(u * r * cfg), "--ulysses-degree", str(u), "--ring-degree", str(r),
            "--no-output", "--json", report_path]
    if cfg == 2:
        argv.append("--cfg-parallel")
    if args.dtype:
        argv += ["--dtype", args.dtype]
    if args.no_parallel_vae:
        argv.append("--no-parallel-vae")
    if args.compile:
        argv += ["--compile", args.compile]
    if args.cuda_graphs:
        argv.append("--cuda-graphs")
    return argv


def available_processes(device):
    return torch.cuda.device_count() if device == "cuda" else (os.cpu_count() or 1)


def run_config(args, config, tmp):
    """The report of one config, or a dict saying why there is none."""
    u, r, cfg = config
    label = f"u{u}r{r}" + ("c2" if cfg == 2 else "")
    need = u * r * cfg
    if need > available_processes(args.device):
        return {"config": label, "skipped": f"needs {need} {args.device} devices"}
    path = os.path.join(tmp, f"{label}.json")
    argv = generate_argv(args, config, path)
    print(f"[e2e] {label}: {' '.join(argv[1:])}", flush=True)
    proc = subprocess.run(argv, cwd=_ROOT, timeout=args.timeout, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(path):
        tail = (proc.stderr or proc.stdout)[-2000:]
        print(f"[e2e] {label} failed (exit {proc.returncode}):\n{tail}", flush=True)
        return {"config": label, "failed": f"exit code {proc.returncode}", "stderr_tail": tail}
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    problems = check_report(report)
    if problems:  # cannot happen unless the report writer is broken: refuse to pass it on
        raise RuntimeError(f"{label}: inconsistent report: {problems}")
    return report


def main(argv=None):
    args = parse_args(argv)
    meta = {"bench": "e2e", "measured_by": "ringsp_bench.e2e_generate",
            "command": " ".join([os.path.basename(sys.argv[0])] + (sys.argv[1:] if argv is None else list(argv))),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if args.device == "cuda" and not torch.cuda.is_available():
        print("ringsp_bench.e2e_generate: CUDA is not available; nothing measured "
              "(use --device cpu to check the script)")
        _write(args.json, {**meta, "skipped": "CUDA is not available", "runs": []})
        return 0
    with tempfile.TemporaryDirectory(prefix="ringsp-e2e-") as tmp:
        results = [run_config(args, c, tmp) for c in args.config_list]
    reports = [r for r in results if "stages_s" in r]
    if reports:
        print("\nStage time breakdown (speedup over the first config)\n" + format_comparison(reports))
        for rep in reports:
            mem = rep["memory"]["max"]
            peak = mem["peak_reserved_gib"] if mem["peak_reserved_gib"] is not None else mem["peak_rss_gib"]
            print(f"  {config_label(rep['parallel'])}: denoise step mean {rep['denoise']['mean_s']:.4f} s, median "
                  f"{rep['denoise']['median_s']:.4f} s; peak memory (max over ranks) {peak:.2f} GiB")
            if "compile" in rep:
                c = rep["compile"]
                print(f"    compile warm-up ({c['mode']}{' + CUDA graphs' if c['cuda_graphs'] else ''}, "
                      f"{c['warmup_steps']} steps): {c['warmup_s']:.2f} s")
    for r in results:
        if "stages_s" not in r:
            print(f"  {r['config']}: {r.get('skipped') or r.get('failed')}")
    _write(args.json, {**meta, "runs": reports, "not_run": [r for r in results if "stages_s" not in r]})
    return 0 if all("failed" not in r for r in results) else 1


def _write(path, data):
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    print(f"[e2e] wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
