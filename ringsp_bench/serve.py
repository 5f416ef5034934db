"""`ringsp serve` against K separate `ringsp generate` runs of the same request.

    python -m ringsp_bench.serve --k 5 --json bench/results/serve_cpu_tiny_wan.json -- \\
        --model tiny-wan --device cpu --num-gpus 2 --ring-degree 2 --vae-min-parallel-pixels 0
    python -m ringsp_bench.serve --k 8 --request '{"size": "832x480", "num_frames": 81, "num_inference_steps": 8}' \\
        --json bench/results/serve_h100_wan1.3b.json -- --model wan2.1-t2v-1.3b --dummy-weights --num-gpus 1

The flags after `--` are given to `ringsp serve` and to every `ringsp generate` run alike
(model, parallel layout, device). One server is started (its start-up, load and warm-up
timed apart); then K requests one after another and K at once (all submitted together),
each timed by the client from sending the request to holding the decoded result (a video's
job is asked for with ?wait, so the answer comes as it ends). Per request: the latency, the stage table's total (the
generation itself, as ringsp generate times it), the server's overhead = latency - total -
time queued behind other requests (HTTP, queue, broadcast, encoding the PNG / mp4), and the
overhead less the encoding (save_s, which ringsp generate pays too, outside its total),
and the first denoising step against the median of the later ones. Then K fresh `ringsp
generate` runs of the same request (--output written, as the server writes it): their
wall time (process start, load and warm-up included), stage total and first-step ratio.
--json writes it all with device, versions, date and command.
"""
import argparse
import base64
import concurrent.futures
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

WAIT_S = 60  # GET /v1/videos/{id}?wait: the answer comes as the job ends, no polling
DEFAULT_REQUEST = {"prompt": "a cat is playing piano", "seed": 0}
START_S = 1800


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=5, help="requests per phase and generate runs (default %(default)s)")
    p.add_argument("--request", default=json.dumps(DEFAULT_REQUEST),
                   help="the request body (JSON; fields of POST /v1/videos or /v1/images/generations)")
    p.add_argument("--no-generate", action="store_true", help="skip the ringsp generate runs")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per request or generate run")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("flags", nargs=argparse.REMAINDER, help="-- then the flags of ringsp serve / generate")
    args = p.parse_args(argv)
    args.flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    args.body = json.loads(args.request)
    if args.k < 2:
        p.error("--k must be >= 2")
    return args


# ------------------------------------------------------------------------------ the server


class Server:
    def __init__(self, flags, env):
        import httpx

        start = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "ringsp", "serve", "--port", "0", *flags],
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.lines = []
        threading.Thread(target=lambda: [self.lines.append(x) for x in self.proc.stdout], daemon=True).start()
        url = self._wait("at http://").split("at ")[1].split(";")[0]
        self._wait("ringsp serve: ready")
        self.startup_s = time.perf_counter() - start
        self.client = httpx.Client(base_url=url, timeout=None)
        self.model = self.client.get("/v1/models").json()["data"][0]

    def _wait(self, text):
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in self.lines:
                if text in line:
                    return line
            time.sleep(0.05)
        raise RuntimeError(f"ringsp serve did not start: {''.join(self.lines)[-2000:]}")

    def request(self, body):
        """(client latency, [timings of each output]) of one request, its result decoded."""
        start = time.perf_counter()
        if self.model["media"] == "video":
            job = self.client.post("/v1/videos", json=body).json()
            while job["status"] not in ("completed", "failed"):
                job = self.client.get(f"/v1/videos/{job['id']}", params={"wait": WAIT_S}).json()
            if job["status"] != "completed":
                raise RuntimeError(f"the request failed: {job['error']}")
            content = self.client.get(f"/v1/videos/{job['id']}/content").content
            latency = time.perf_counter() - start
            self.client.delete(f"/v1/videos/{job['id']}")
            assert content[4:8] == b"ftyp", "not an mp4"
            return latency, [job["timings"]]
        reply = self.client.post("/v1/images/generations", json=body)
        reply.raise_for_status()
        data = reply.json()["data"]
        for d in data:
            base64.b64decode(d["b64_json"], validate=True)
        return time.perf_counter() - start, [d["timings"] for d in data]

    def stop(self):
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


# ------------------------------------------------------------------------------ figures


def step_ratio(steps):
    """The first denoising step over the median of the later ones (None for a single step)."""
    return steps[0] / statistics.median(steps[1:]) if len(steps) > 1 else None


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summarise(runs, wall_s=None):
    """runs: [(latency, timings)] -> per-request rows and p50 / p95 / requests per second."""
    rows = []
    for latency, timings in runs:
        t = timings[0]
        total = sum(x["total_s"] for x in timings)
        overhead = latency - total - t["queued_s"]
        served = latency - t["queued_s"]
        save = sum(x["save_s"] for x in timings)
        rows.append({"latency_s": latency, "total_s": total, "queued_s": t["queued_s"], "overhead_s": overhead,
                     "overhead_pct": 100 * overhead / served, "save_s": save,
                     "overhead_without_save_pct": 100 * (overhead - save) / served,
                     "denoise_step_s": t["denoise_step_s"], "first_step_ratio": step_ratio(t["denoise_step_s"])})
    lat = [r["latency_s"] for r in rows]
    out = {"requests": rows, "latency_p50_s": percentile(lat, 50), "latency_p95_s": percentile(lat, 95),
           "overhead_p50_pct": statistics.median(r["overhead_pct"] for r in rows),
           "overhead_p50_s": statistics.median(r["overhead_s"] for r in rows),
           "overhead_without_save_p50_pct": statistics.median(r["overhead_without_save_pct"] for r in rows),
           "first_step_ratio_max": _max(r["first_step_ratio"] for r in rows)}
    if wall_s is not None:
        out.update(wall_s=wall_s, requests_per_s=len(rows) / wall_s)
    return out


def _max(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


# ------------------------------------------------------------------------------ generate


def generate_flags(body):
    """ringsp generate's flags for a request body."""
    flags = ["--prompt", body.get("prompt", DEFAULT_REQUEST["prompt"]), "--seed", str(body.get("seed", 0))]
    names = {"negative_prompt": "--negative-prompt", "num_inference_steps": "--steps",
             "guidance_scale": "--guidance-scale", "num_frames": "--num-frames"}
    for field, flag in names.items():
        if field in body:
            flags += [flag, str(body[field])]
    if "size" in body:
        width, height = body["size"].split("x")
        flags += ["--width", width, "--height", height]
    return flags


def run_generate(flags, body, media, env, timeout):
    with tempfile.TemporaryDirectory(prefix="ringsp-bench-") as tmp:
        report_path = os.path.join(tmp, "r.json")
        out = os.path.join(tmp, "out.png" if media == "image" else "out.mp4")
        argv = [sys.executable, "-m", "ringsp", "generate", *flags, *generate_flags(body), "--output", out,
                "--json", report_path]
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"ringsp generate failed: {proc.stderr[-2000:]}")
        with open(report_path) as f:
            report = json.load(f)
    steps = report["denoise_step_s"]
    return {"wall_s": wall, "total_s": report["total_s"], "load_s": report["load_s"], "save_s": report["save_s"],
            "denoise_step_s": steps, "first_step_ratio": step_ratio(steps)}, report


# ------------------------------------------------------------------------------ main


def main(argv=None):
    args = parse_args(argv)
    env = dict(os.environ)
    server = Server(args.flags, env)
    try:
        media = server.model["media"]
        sequential = [server.request(args.body) for _ in range(args.k)]
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.k) as pool:
            concurrent_runs = list(pool.map(lambda _: server.request(args.body), range(args.k)))
        concurrent_wall = time.perf_counter() - start
    finally:
        code = server.stop()
    result = {"measured_by": "ringsp_bench.serve", "command": " ".join(shlex.quote(a) for a in sys.argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "flags": args.flags, "request": args.body, "k": args.k, "model": server.model,
              "server": {"startup_s": server.startup_s, "exit_code": code},
              "sequential": summarise(sequential), "concurrent": summarise(concurrent_runs, concurrent_wall)}
    report = None
    if not args.no_generate:
        runs = [run_generate(args.flags, args.body, media, env, args.timeout) for _ in range(args.k)]
        report = runs[0][1]
        rows = [r for r, _ in runs]
        result["generate"] = {"runs": rows, "wall_p50_s": statistics.median(r["wall_s"] for r in rows),
                              "total_p50_s": statistics.median(r["total_s"] for r in rows),
                              "first_step_ratio_max": _max(r["first_step_ratio"] for r in rows)}
    result["device"] = report["device"] if report else _device()
    result["versions"] = dict(report["versions"] if report else {}, **_server_versions())
    _print(result)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"written to {args.json}")
    return 0


def _device():
    import torch

    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def _server_versions():
    import fastapi
    import uvicorn

    import ringsp

    return {"ringsp": ringsp.__version__, "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__,
            "python": sys.version.split()[0]}


def _print(r):
    s, c = r["sequential"], r["concurrent"]
    print(f"ringsp serve, {r['model']['id']}: start-up (load + warm-up) {r['server']['startup_s']:.2f} s")
    for name, x in (("sequential", s), ("concurrent", c)):
        rate = f", {x['requests_per_s']:.3f} requests/s" if "requests_per_s" in x else ""
        print(f"  {name:10s} K={r['k']}: latency p50 {x['latency_p50_s']:.3f} s, p95 {x['latency_p95_s']:.3f} s"
              f"{rate}; overhead p50 {x['overhead_p50_s'] * 1000:.1f} ms ({x['overhead_p50_pct']:.2f} %, "
              f"{x['overhead_without_save_p50_pct']:.2f} % without the encoding); "
              f"first step / later steps max {_ratio(x['first_step_ratio_max'])}")
    if "generate" in r:
        g = r["generate"]
        print(f"  ringsp generate x{r['k']}: wall p50 {g['wall_p50_s']:.2f} s (stage total p50 "
              f"{g['total_p50_s']:.3f} s); first step / later steps max {_ratio(g['first_step_ratio_max'])}")


def _ratio(value):
    return "n/a (one step)" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
