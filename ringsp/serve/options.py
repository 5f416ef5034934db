"""`ringsp serve` flags: ringsp generate's model, parallel and run flags, its generation flags
as the defaults of every request, and the server's own; checked into a ServeConfig before
any worker starts (the same checks as ringsp generate's, one line and exit code 2)."""
import argparse
import copy
import os
import shutil
import tempfile
from dataclasses import dataclass

from ringsp.cli.args import (
    DEMO_ARGV, UsageError, _Parser, add_generation_args, add_model_args, add_parallel_args, add_run_args, model_of,
    request_from_args,
)
from ringsp.cli.output import writer_problem

PROG = "ringsp serve"
DEFAULT_PORT = 8000
DEFAULT_MAX_QUEUE = 16
# The no-argument server: the built-in tiny model on 2 gloo processes, as `ringsp generate`'s demo.
SERVE_DEMO_ARGV = [a for a in DEMO_ARGV if a != "--compare-single"]
# Untimed steps of the start-up warm-up (Qwen-Image's scheduler needs 2).
WARMUP_STEPS = 2


@dataclass
class ServeConfig:
    host: str
    port: int
    api_key: str | None
    max_queue: int
    output_dir: str
    own_output_dir: bool        # made by the server (a temporary folder), removed when it stops
    info: object                # ModelInfo of the served model
    args: argparse.Namespace    # the parsed flags: each HTTP request is checked on a copy of them
    base: object                # GenerateRequest of the flags alone: the engine's config and warm-up
    warmup_steps: int = WARMUP_STEPS
    demo: bool = False

    @property
    def model_id(self):
        return self.info.name

    def request_args(self):
        """A copy of the flags that one HTTP request may change (its fields set on it)."""
        return copy.copy(self.args)


def build_parser():
    p = _Parser(prog=PROG, description="Serve images (Qwen-Image, Qwen-Image-Edit) and videos (Wan) over HTTP "
                "(OpenAI-style /v1/images/generations, /v1/images/edits, /v1/videos) from sequence-parallel "
                "workers that load the model once. With no arguments: the built-in tiny Wan model on 2 CPU "
                "processes.")
    add_model_args(p)
    add_generation_args(p, title="request defaults (a request's own fields take precedence)")
    add_parallel_args(p)
    add_run_args(p, warmup_help="untimed steps of the start-up warm-up request (default %(default)s; 0: none)",
                 warmup_default=WARMUP_STEPS)
    srv = p.add_argument_group("server")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    srv.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s; 0: any free port")
    srv.add_argument("--api-key", metavar="KEY",
                     help="require `Authorization: Bearer KEY` on every endpoint but /health (default: none)")
    srv.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE, metavar="N",
                     help="requests waiting behind the running one; more get 429 (default %(default)s)")
    srv.add_argument("--output-dir", metavar="DIR",
                     help="where the server keeps its videos (file names are its own job ids); default: a "
                     "temporary folder removed when the server stops")
    p.set_defaults(output=None, no_output=True, overwrite=False, json=None, compare_single=False)
    return p


def parse_config(argv, env=None):
    """A checked ServeConfig from argv; raises UsageError with a one-line message."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        raise UsageError("ringsp serve starts its own worker processes: run it without torchrun")
    demo = len(argv) == 0
    args = build_parser().parse_args(SERVE_DEMO_ARGV if demo else argv)
    info = model_of(args)
    warmup = args.warmup_steps
    args.warmup_steps = 0  # per request: none (the server warms up once, at start)
    output_dir, own = _output_dir(args.output_dir)
    try:
        return _config(args, info, warmup, output_dir, own, demo)
    except UsageError:
        if own:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise


def _config(args, info, warmup, output_dir, own, demo):
    if info.edit and args.image is None:  # the warm-up of an edit model needs an input image
        args.image = _warmup_image(output_dir, args.image_area or info.defaults.image_area)
    base = request_from_args(args, info, env={})
    if warmup < 0 or 0 < warmup < info.min_steps:  # Qwen-Image and LTX-Video: one step gives NaN sigmas
        raise UsageError(f"--warmup-steps must be 0 or >= {info.min_steps}, got {warmup}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if args.max_queue < 0:
        raise UsageError(f"--max-queue must be >= 0, got {args.max_queue}")
    suffix = ".png" if info.makes_images else ".mp4"
    problem = writer_problem("x" + suffix)
    if problem:
        raise UsageError(f"the server writes {suffix} files: {problem}")
    config = ServeConfig(host=args.host, port=args.port, api_key=args.api_key or None, max_queue=args.max_queue,
                         output_dir=output_dir, own_output_dir=own, info=info, args=args, base=base,
                         warmup_steps=warmup, demo=demo)
    return config


def _warmup_image(folder, area):
    """A square random image of about `area` pixels (the edit warm-up's input), in the server's folder."""
    import numpy as np
    import PIL.Image

    side = max(32, int((area or 1024 * 1024) ** 0.5))
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    path = os.path.join(folder, "warmup-input.png")
    PIL.Image.fromarray(pixels).save(path)
    return path


def _output_dir(path):
    if path is None:
        return tempfile.mkdtemp(prefix="ringsp-serve-"), True
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output-dir {path!r}: cannot create it ({exc.strerror})") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"--output-dir {path!r} is not writable")
    return os.path.abspath(path), False
