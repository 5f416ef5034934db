"""The stage-timed generation loop on a diffusers pipeline's components.

It does what the pipeline's `__call__` does (same calls, same order, same dtypes), written
out so that each stage can be timed on its own and so that CFG parallelism can put the
conditional and unconditional passes on the two halves of the world:

    result = generate(pipe, params, ctx=None, timer=StageTimer(), progress=True)

What differs between models (prompt encoding, latent shapes, the transformer call, the
guidance formula, latent (de)normalisation) is a model run, one module per family (RUNS):
`wan_loop.WanRun`, `qwen_loop.QwenRun`, `flux_loop.FluxRun`, `ltx_loop.LTXRun`. This module
holds what they share: the stages, the denoising loop, CFG parallelism, the VAE decode.
A run whose guidance is not classifier-free (guidance-distilled FLUX.1) says `cfg = False`.

Every rank of a group runs it with the same arguments and keeps identical latents: the
noise is drawn on the CPU from the seed and then moved, the sequence-parallel transformer
returns the full prediction on every rank, and the CFG halves exchange their predictions
with one all-gather. Only the decoded frames may be rank 0's alone (parallel VAE, output
"rank0", or --no-parallel-vae).
"""
from dataclasses import dataclass, field
from typing import Any

import torch

from .timing import StageTimer


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    negative_prompt: str = ""
    height: int | None = 480         # None (edit models): the reference image's size, as diffusers does
    width: int | None = 832
    num_frames: int = 81             # 1 for image models
    steps: int = 50
    guidance_scale: float = 5.0      # CFG scale (Qwen: true_cfg_scale; > 1 turns CFG on); FLUX.1-dev: embedded
    seed: int = 0
    max_sequence_length: int = 512
    parallel_vae: bool = True
    vae_min_parallel_pixels: int | None = None  # None: ringsp.vae's default
    image: Any = None                # edit models: the input image (a path or a PIL image)
    image_area: int | None = None    # edit models: pixels the input is resized to (None: diffusers' 1024 x 1024)


@dataclass
class GenerationResult:
    latents: torch.Tensor            # final latents as the pipeline holds them, float32, on every rank
    frames: torch.Tensor | None      # [F, H, W, 3] float32 in [0, 1] on the CPU (F = 1: an image); None off rank 0
    notes: list = field(default_factory=list)


# diffusers pipeline class -> (module of its run, the run class)
RUNS = {"WanPipeline": ("wan_loop", "WanRun"), "QwenImagePipeline": ("qwen_loop", "QwenRun"),
        "QwenImageEditPipeline": ("qwen_loop", "QwenRun"), "FluxPipeline": ("flux_loop", "FluxRun"),
        "LTXPipeline": ("ltx_loop", "LTXRun")}


def model_run(pipe, params, device):
    """The model run (see the module doc) for this pipeline (or a subclass of a supported one)."""
    import importlib

    for cls in type(pipe).__mro__:
        if cls.__name__ in RUNS:
            module, run = RUNS[cls.__name__]
            return getattr(importlib.import_module(f".{module}", __package__), run)(pipe, params, device)
    raise TypeError(f"pipe must be a diffusers {', '.join(RUNS)}, got {type(pipe).__name__}")


@torch.no_grad()
def generate(pipe, params, ctx=None, timer=None, progress=False):
    """Runs the six stages (see ringsp.cli.timing.STAGES) and returns a GenerationResult."""
    timer = timer or StageTimer()
    device = ctx.device if ctx is not None else main_transformer(pipe).device
    run = model_run(pipe, params, device)
    cfg_rank = _cfg_rank(ctx)
    do_cfg = params.guidance_scale > 1.0 and getattr(run, "cfg", True)
    if cfg_rank is not None and not do_cfg:
        raise ValueError("CFG parallelism needs classifier-free guidance (guidance_scale > 1)")
    with timer.stage("InputValidation"):
        run.validate()
    with timer.stage("TextEncoding"):
        conds = {branch: run.encode(prompt) for branch, prompt in _prompts(params, do_cfg, cfg_rank)}
    with timer.stage("LatentPreparation"):
        latents = run.initial_latents()
    with timer.stage("TimestepPreparation"):
        timesteps = run.timesteps(latents)
    with timer.stage("Denoising"):
        latents = _denoise(pipe, run, latents, timesteps, conds, ctx, timer, progress)
    notes = []
    with timer.stage("Decoding"):
        decoded = _decode(pipe.vae, run.vae_input(latents), params, ctx, notes)
        frames = None if decoded is None else run.to_frames(decoded)
    return GenerationResult(latents=latents.float(), frames=frames, notes=notes)


def main_transformer(pipe):
    """The transformer that defines the pipeline's shapes (Wan2.2 may hold only transformer_2)."""
    transformer = getattr(pipe, "transformer", None)
    return transformer if transformer is not None else pipe.transformer_2


def _cfg_rank(ctx):
    """This rank's CFG half (0: conditional, 1: unconditional), or None without CFG parallelism."""
    if ctx is None or ctx.cfg_degree == 1:
        return None
    if ctx.cfg_degree != 2:
        raise ValueError(f"cfg_degree must be 1 or 2, got {ctx.cfg_degree}")
    return ctx.cfg_rank


def _prompts(params, do_cfg, cfg_rank):
    """(branch, prompt) pairs this rank encodes; under CFG parallelism only its own half's."""
    cond, uncond = ("cond", params.prompt), ("uncond", params.negative_prompt or "")
    if cfg_rank is not None:
        return [cond if cfg_rank == 0 else uncond]
    return [cond, uncond] if do_cfg else [cond]


def _denoise(pipe, run, latents, timesteps, conds, ctx, timer, progress):
    from tqdm.auto import tqdm

    cfg_rank = _cfg_rank(ctx)
    with tqdm(total=len(timesteps), disable=not progress, desc="Denoising", unit="step") as bar:
        for t in timesteps:
            if cfg_rank is not None:
                mine = run.predict(latents, t, conds["cond" if cfg_rank == 0 else "uncond"])
                cond, uncond = _exchange_cfg(mine, ctx)
            else:
                cond = run.predict(latents, t, conds["cond"])
                uncond = run.predict(latents, t, conds["uncond"]) if "uncond" in conds else None
            noise = cond if uncond is None else run.guide(cond, uncond)
            latents = pipe.scheduler.step(noise, t, latents, return_dict=False)[0]
            timer.step_done()
            bar.update()
    return latents


def _exchange_cfg(pred, ctx):
    """(cond, uncond) on both CFG halves from each half's own prediction: one all-gather."""
    import torch.distributed as dist

    from ringsp.parallel.fail_together import wait

    b = pred.shape[0]
    # Concatenated along the batch (gloo takes no stacked output): [cond batch; uncond batch].
    both = torch.empty((2 * b,) + tuple(pred.shape[1:]), dtype=pred.dtype, device=pred.device)
    wait(dist.all_gather_into_tensor(both, pred.contiguous(), group=ctx.cfg_group, async_op=True))
    return both[:b], both[b:]


def _decode(vae, z, params, ctx, notes):
    """vae.decode(z) on rank 0 (None elsewhere), through the parallel VAE when the run has
    several ranks and params allow it."""
    rank = ctx.rank if ctx is not None else 0
    if ctx is not None and ctx.world_size > 1 and params.parallel_vae:
        if _parallel_decodable(vae):
            return _parallel_decode(vae, z, params, notes)
        notes.append(f"parallel VAE decode supports the Wan and Qwen-Image VAEs, not {type(vae).__name__}: "
                     "rank 0 decoded alone")
    return vae.decode(z, return_dict=False)[0] if rank == 0 else None


def _parallel_decodable(vae):
    from ringsp.vae.families import family_of

    try:
        family_of(vae)
    except TypeError:
        return False
    return True


def _parallel_decode(vae, z, params, notes):
    from ringsp.vae import parallel_vae_decode

    try:
        return parallel_vae_decode(vae, z, output="rank0", min_parallel_pixels=params.vae_min_parallel_pixels)
    except ValueError as exc:
        # Raised on every rank together, before any collective (e.g. too few latent rows for
        # this many ranks): decode on rank 0 alone instead of failing the whole run.
        import torch.distributed as dist

        notes.append(f"parallel VAE decode not possible here ({exc}); rank 0 decoded alone")
        return vae.decode(z, return_dict=False)[0] if dist.get_rank() == 0 else None
