"""One rank of `ringsp generate` and `ringsp serve`: an Engine loads the pipeline once, puts
it under sequence parallelism (and compiles it), then runs generations with stage timings
and gathers the memory peaks; rank 0 writes the video or image (or, if that fails, keeps
the frames as .npy: ringsp.cli.output) and returns the report.

    engine = Engine(config, distributed=True)         # in an initialised process group
    outcome = engine.run(request)                     # as often as wanted (ringsp serve)
    outcome = run_rank(request, distributed=True)     # ringsp generate: one engine, one run
    outcome = run_rank(request, distributed=False)    # one process, plain diffusers transformer

All ranks first check that they were given the same request (torchrun starts each rank
with its own argv), so ranks that disagree fail together instead of hanging.
"""
import contextlib
import dataclasses
import datetime
import logging
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass

import torch

from . import devices
from .generation import generate
from .memory import peak_memory, reset_peak
from .nonfinite import find_nonfinite
from .report import build_report
from .output import save_output
from .timing import StageTimer, make_sync

WEIGHTS_SEED = 0  # dummy weights depend on this only, never on --seed


@dataclass
class RankOutcome:
    report: dict
    latents: torch.Tensor | None = None
    frames: torch.Tensor | None = None  # [F, H, W, 3] in [0, 1]; F = 1 for an image


def quiet_libraries():
    """Keeps the console to ringsp's own lines: diffusers/transformers info and deprecation chatter off."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*low_cpu_mem_usage.*")
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except ImportError:  # the models extra is missing: loading will say so
        pass


def rank_device(request):
    return devices.rank_device(request.device, int(os.environ.get("LOCAL_RANK", "0")))


# What an engine is built for: a request to run() may differ from the engine's in anything else
# (prompt, sizes, steps, seed, image, output) but not in these.
ENGINE_FIELDS = ("model_name", "model_path", "model_label", "full_text_encoder", "num_gpus", "ulysses_degree",
                 "ring_degree", "cfg_degree", "device", "dtype", "vae_dtype", "compile_mode", "cuda_graphs",
                 "attention_precision", "timeout_s", "under_torchrun")


def run_rank(request, *, distributed, quiet=False, keep_tensors=False):
    """Runs the request on this rank; returns a RankOutcome on rank 0 and None elsewhere.
    quiet: no progress bar, no output file (the reference run of --compare-single).
    keep_tensors: return the final latents and frames too (for comparisons)."""
    engine = Engine(request, distributed=distributed)
    return engine.run(request, write_output=not quiet, progress=not quiet, keep_tensors=keep_tensors)


class Engine:
    """One rank's pipeline, loaded once and run many times. `config` (a GenerateRequest) says
    the model, dtypes, parallel layout and compile options; building the engine joins the
    parallel context (all ranks agree on `config`), loads the pipeline, enables sequence
    parallelism and, with config.compile_mode, compiles and warms it up."""

    def __init__(self, config, *, distributed):
        import torch.distributed as dist

        quiet_libraries()
        self.config, self.distributed = config, distributed
        self.rank = dist.get_rank() if distributed else 0
        self.device = rank_device(config)
        self.ctx = _parallel_context(config) if distributed else None
        start = time.perf_counter()
        self.pipe, self.notes = load_pipeline_for(config, self.device)
        if distributed and config.model_path is None and self.device.type != "cpu":
            _broadcast_weights(self.pipe)
        if self.ctx is not None and (self.ctx.sp_degree > 1 or config.attention_precision):
            from ringsp.models import enable_sequence_parallel

            enable_sequence_parallel(self.pipe, self.ctx, attention_precision=config.attention_precision)
        self.sp_transformer = _sp_enabled(self.pipe)
        self.sync = make_sync(self.device, None, distributed)
        self.sync()
        self.load_s = time.perf_counter() - start
        self.compiled = _compile(self.pipe, config, self.ctx, self.sync) if config.compile_mode else None

    def warm_up(self, request, steps):
        """An untimed generation of `request` with `steps` steps (fills autotune and cuDNN caches)."""
        self._check_fits(request)
        with _together(request, self.distributed):
            generate(self.pipe, dataclasses.replace(request.params(), steps=steps), self.ctx)

    def run(self, request, *, write_output=True, progress=True, keep_tensors=False, listener=None):
        """One timed generation on every rank; a RankOutcome on rank 0, None elsewhere.
        write_output: rank 0 writes request.output (if set). progress: rank 0's progress bar.
        listener: StageTimer's listener (stage starts, step ends). A rank that raises inside
        the generation makes every rank raise (ringsp.fail_together)."""
        self._check_fits(request)
        if request.warmup_steps:
            self.warm_up(request, request.warmup_steps)
        reset_peak(self.device)
        timer = StageTimer(self.sync, listener=listener)
        with _together(request, self.distributed):  # denoising and decoding: a rank that raises ends every rank
            result = generate(self.pipe, request.params(), self.ctx, timer, progress=progress and self.rank == 0)
        memory = _gather(peak_memory(self.device, self.rank), self.distributed)
        if self.rank != 0:
            return None
        save_s, output = 0.0, None
        if request.output and write_output:
            start = time.perf_counter()
            output = save_output(request.output, result.frames, request.media, request.fps)  # never raises
            save_s = time.perf_counter() - start
        meta = _meta(request, self.device, self.notes + result.notes, self.load_s, save_s, self.distributed,
                     self.sp_transformer)
        report = build_report(timer.stages, timer.steps, memory, **meta)
        if output is not None:
            report["output"] = output
        nonfinite = find_nonfinite(result.latents, result.frames)
        if nonfinite:
            report["nonfinite"] = nonfinite
        if self.compiled is not None:
            report["compile"] = self.compiled
        if not keep_tensors:
            return RankOutcome(report)
        return RankOutcome(report, latents=result.latents.float().cpu(), frames=result.frames)

    def _check_fits(self, request):
        differ = [f for f in ENGINE_FIELDS if getattr(request, f) != getattr(self.config, f)]
        if differ:
            raise ValueError(f"the request differs from the engine's in {', '.join(differ)}: those are fixed when "
                             "the engine is built")


def _compile(pipe, request, ctx, sync):
    """torch.compile of the transformer(s), then the untimed warm-up generation that compiles
    them (and records the CUDA graphs): what the report says of it."""
    from ringsp.models import compile_pipeline

    compile_pipeline(pipe, request.compile_mode, request.cuda_graphs)
    # Qwen's scheduler needs 2 steps; CUDA graphs record on a shape's second forward, replay from the third
    steps = 3 if request.cuda_graphs else 2
    start = time.perf_counter()
    with _together(request, ctx is not None):
        generate(pipe, dataclasses.replace(request.params(), steps=steps), ctx)
    sync()
    return {"mode": request.compile_mode, "cuda_graphs": request.cuda_graphs, "warmup_steps": steps,
            "warmup_s": time.perf_counter() - start}


def _together(request, distributed):
    """ringsp.fail_together over every rank of the run (a no-op in one process)."""
    if not distributed:
        return contextlib.nullcontext()
    from ringsp.parallel import fail_together

    return fail_together(None, timeout_s=request.timeout_s)


def load_pipeline_for(request, device):
    """(pipeline on `device`, notes): from --model-path, or built with dummy weights."""
    from ringsp.models.pipelines import build_dummy_pipeline, load_pipeline

    if request.model_path is not None:
        return load_pipeline(request.model_path, dtype=request.torch_dtype, device=device,
                             vae_dtype=request.torch_vae_dtype)
    return build_dummy_pipeline(request.model_name, dtype=request.torch_dtype, device=device, seed=WEIGHTS_SEED,
                                full_text_encoder=request.full_text_encoder, vae_dtype=request.torch_vae_dtype)


def _parallel_context(request):
    import torch.distributed as dist

    from ringsp.parallel import ParallelConfig, init_parallel

    _agree_on_request(request)
    if dist.get_world_size() != request.num_gpus:
        raise ValueError(f"the process group has {dist.get_world_size()} ranks but the request needs "
                         f"{request.num_gpus}")
    # The Ulysses / ring / CFG subgroups get --timeout too, as the default group did.
    return init_parallel(ParallelConfig(request.ulysses_degree, request.ring_degree, request.cfg_degree),
                         timeout=request.timeout_s)


def _agree_on_request(request):
    """Every rank raises the same ValueError if the ranks were given different requests."""
    from ringsp.parallel.agreement import agree

    agree(None, "ringsp generate (ranks were started with different arguments)", dataclasses.asdict(request),
          cache=False)


def _broadcast_weights(pipe):
    """Random weights made on accelerators are only as alike as their RNGs: make them rank 0's."""
    import torch.distributed as dist

    for name in ("transformer", "transformer_2", "text_encoder", "text_encoder_2", "vae"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def _gather(entry, distributed):
    if not distributed:
        return [entry]
    import torch.distributed as dist

    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, entry)
    return everyone


def _sp_enabled(pipe):
    from ringsp.models import is_sequence_parallel_enabled

    transformers = (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None))
    return any(is_sequence_parallel_enabled(t) for t in transformers if t is not None)


def _meta(request, device, notes, load_s, save_s, distributed, sp_transformer):
    import torch.distributed as dist

    backend = str(dist.get_backend()) if distributed else None
    launcher = "torchrun" if request.under_torchrun else ("spawn" if distributed else "single process")
    return {
        "measured_by": "ringsp generate",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "device": _device_info(device, request.num_gpus if distributed else 1),
        "model": {"name": request.model_label,
                  "source": request.model_path or "dummy weights (published config, random values)",
                  "notes": list(notes)},
        "request": {"prompt": request.prompt, "negative_prompt": request.negative_prompt,
                    "height": request.height, "width": request.width, "num_frames": request.num_frames,
                    "steps": request.steps, "guidance_scale": request.guidance_scale, "seed": request.seed,
                    "dtype": request.dtype, "vae_dtype": request.vae_dtype,
                    "warmup_steps": request.warmup_steps, "media": request.media, "fps": request.fps,
                    "image": request.image,
                    "image_area": request.image_area},
        "parallel": {"num_gpus": request.num_gpus if distributed else 1,
                     "ulysses_degree": request.ulysses_degree if distributed else 1,
                     "ring_degree": request.ring_degree if distributed else 1,
                     "cfg_degree": request.cfg_degree if distributed else 1,
                     "parallel_vae": bool(request.parallel_vae and distributed),
                     "sequence_parallel_transformer": sp_transformer, "backend": backend,
                     "launcher": launcher},
        # Outside the stage table and its total: loading weights and writing the file.
        "load_s": load_s, "save_s": save_s,
    }


def _versions():
    import diffusers
    import transformers

    import ringsp

    return {"ringsp": ringsp.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": sys.version.split()[0]}


def _device_info(device, count):
    if device.type == "cpu":
        return {"type": "cpu", "name": platform.processor() or platform.machine(), "count": count,
                "note": "processes on the CPU (gloo), not GPUs"}
    return {"type": device.type, "name": torch.get_device_module(device).get_device_name(device), "count": count}
