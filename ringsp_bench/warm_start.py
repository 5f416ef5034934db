"""Warm start: is the first denoising step of a run as fast as the later ones?

    python -m ringsp_bench.warm_start [--json OUT.json] [--runs 2] [-- <extra ringsp generate args>]

Runs the same `ringsp generate` command `--runs` times in fresh processes that share one
fresh set of on-disk caches (Triton's compiled kernels, ringsp's dispatch cache), as a user
who runs a command twice does. Run 1 pays compilation and measurement; from run 2 on, the
first step should cost what a later step costs. Reported per run: the step times and
first / median(later steps). Default command: Wan2.1-T2V-1.3B from its published config with
random weights, 480x832, 33 frames, 4 steps, one GPU.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from .attn_kernels import versions  # the shared run metadata

DEFAULT = ["--model", "wan2.1-t2v-1.3b", "--dummy-weights", "--height", "480", "--width", "832",
           "--num-frames", "33", "--steps", "4", "--no-output"]


def one_run(cmd, env, report):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + ["--json", report], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(report) as f:
        steps = json.load(f)["denoise_step_s"]
    if len(steps) < 2:
        raise ValueError("--steps must be at least 2 to compare the first step with later ones")
    later = statistics.median(steps[1:])
    return {"wall_s": wall, "step_s": steps, "first_over_later": steps[0] / later}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--runs", type=int, default=2, help="runs of the same command (>= 2)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- then ringsp generate arguments (default: see above)")
    args = p.parse_args(argv)
    if args.runs < 2:
        p.error("--runs must be at least 2: the second run is the warm one")
    gen_args = [a for a in args.extra if a != "--"] or DEFAULT
    cmd = [sys.executable, "-m", "ringsp", "generate", *gen_args]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TRITON_CACHE_DIR=os.path.join(tmp, "triton"), RINGSP_CACHE_DIR=os.path.join(tmp, "ringsp"))
        for i in range(args.runs):
            r = one_run(cmd, env, os.path.join(tmp, f"report{i}.json"))
            runs.append(r)
            print(f"run {i + 1}: wall {r['wall_s']:.1f} s, steps " + ", ".join(f"{s:.3f}" for s in r["step_s"])
                  + f" s, first/later {r['first_over_later']:.2f}", flush=True)
    meta = versions() if torch.cuda.is_available() else {"torch": torch.__version__}
    result = {"command": " ".join(["ringsp", "generate", *gen_args]), "runs": runs, "versions": meta,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
