"""The text-to-video generation loop on a diffusers WanPipeline's components, stage by stage.

It does what `WanPipeline.__call__` does (same calls, same order, same dtypes), written out
so that each stage can be timed on its own and so that CFG parallelism can put the
conditional and unconditional passes on the two halves of the world:

    result = generate(pipe, params, ctx=None, timer=StageTimer(), progress=True)

Every rank of a group runs it with the same arguments and keeps identical latents: the
noise is drawn on the CPU from the seed and then moved, the sequence-parallel transformer
returns the full prediction on every rank, and the CFG halves exchange their predictions
with one all-gather. Only the decoded video may be rank 0's alone (parallel VAE, output
"rank0", or --no-parallel-vae).
"""
from dataclasses import dataclass, field

import torch

from .timing import StageTimer


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    negative_prompt: str = ""
    height: int = 480
    width: int = 832
    num_frames: int = 81
    steps: int = 50
    guidance_scale: float = 5.0
    seed: int = 0
    max_sequence_length: int = 512
    parallel_vae: bool = True
    vae_min_parallel_pixels: int | None = None  # None: ringsp.vae's default


@dataclass
class GenerationResult:
    latents: torch.Tensor            # final latents [B, C, F, h, w], float32, on every rank
    video: torch.Tensor | None       # [F, H, W, 3] float32 in [0, 1] on the CPU; None off rank 0
    notes: list = field(default_factory=list)


@torch.no_grad()
def generate(pipe, params, ctx=None, timer=None, progress=False):
    """Runs the six stages (see ringsp.cli.timing.STAGES) and returns a GenerationResult."""
    timer = timer or StageTimer()
    device = ctx.device if ctx is not None else main_transformer(pipe).device
    cfg_rank = _cfg_rank(ctx)
    do_cfg = params.guidance_scale > 1.0
    if cfg_rank is not None and not do_cfg:
        raise ValueError("CFG parallelism needs classifier-free guidance (guidance_scale > 1)")
    with timer.stage("InputValidation"):
        _validate(pipe, params)
    with timer.stage("TextEncoding"):
        embeds = _encode(pipe, params, device, do_cfg, cfg_rank)
    with timer.stage("LatentPreparation"):
        latents = _initial_latents(pipe, params, device)
    with timer.stage("TimestepPreparation"):
        pipe.scheduler.set_timesteps(params.steps, device=device)
        timesteps = pipe.scheduler.timesteps
        pipe.scheduler.set_begin_index(0)
    with timer.stage("Denoising"):
        latents = _denoise(pipe, params, latents, timesteps, embeds, ctx, timer, progress)
    notes = []
    with timer.stage("Decoding"):
        video = _decode(pipe, params, latents, ctx, notes)
    return GenerationResult(latents=latents, video=video, notes=notes)


def main_transformer(pipe):
    """The transformer that defines the pipeline's shapes (Wan2.2 may hold only transformer_2)."""
    return pipe.transformer if pipe.transformer is not None else pipe.transformer_2


def _cfg_rank(ctx):
    """This rank's CFG half (0: conditional, 1: unconditional), or None without CFG parallelism."""
    if ctx is None or ctx.cfg_degree == 1:
        return None
    if ctx.cfg_degree != 2:
        raise ValueError(f"cfg_degree must be 1 or 2, got {ctx.cfg_degree}")
    return ctx.cfg_rank


def _validate(pipe, params):
    pipe.check_inputs(params.prompt, params.negative_prompt, params.height, params.width)
    transformer = main_transformer(pipe)
    _, ph, pw = transformer.config.patch_size
    sh, sw = pipe.vae_scale_factor_spatial * ph, pipe.vae_scale_factor_spatial * pw
    if params.height % sh or params.width % sw:
        raise ValueError(f"height and width must be multiples of ({sh}, {sw}), got ({params.height}, {params.width})")
    if params.num_frames < 1 or (params.num_frames - 1) % pipe.vae_scale_factor_temporal:
        raise ValueError(f"num_frames must be {pipe.vae_scale_factor_temporal}k+1, got {params.num_frames}")


def _encode(pipe, params, device, do_cfg, cfg_rank):
    """(cond, uncond) prompt embeddings; under CFG parallelism only this half's one (the other None)."""
    dtype = main_transformer(pipe).dtype
    kw = dict(do_classifier_free_guidance=False, max_sequence_length=params.max_sequence_length,
              device=device, dtype=dtype)
    if cfg_rank == 1:  # the unconditional half never needs the prompt
        return None, pipe.encode_prompt(params.negative_prompt or "", **kw)[0]
    if cfg_rank == 0 or not do_cfg:
        return pipe.encode_prompt(params.prompt, **kw)[0], None
    kw["do_classifier_free_guidance"] = True
    return pipe.encode_prompt(params.prompt, negative_prompt=params.negative_prompt, **kw)


def _initial_latents(pipe, params, device):
    # Drawn on the CPU from the seed: the same bits on every rank and every device type.
    in_channels = main_transformer(pipe).config.in_channels
    generator = torch.Generator("cpu").manual_seed(params.seed)
    latents = pipe.prepare_latents(1, in_channels, params.height, params.width, params.num_frames,
                                   torch.float32, torch.device("cpu"), generator)
    return latents.to(device)


def _denoise(pipe, params, latents, timesteps, embeds, ctx, timer, progress):
    from tqdm.auto import tqdm

    cond_embeds, uncond_embeds = embeds
    boundary = pipe.config.boundary_ratio
    boundary_t = boundary * pipe.scheduler.config.num_train_timesteps if boundary is not None else None
    cfg_rank = _cfg_rank(ctx)
    with tqdm(total=len(timesteps), disable=not progress, desc="Denoising", unit="step") as bar:
        for t in timesteps:
            # Wan2.2 A14B: the high-noise expert above the boundary, the low-noise one below.
            model = pipe.transformer if boundary_t is None or t >= boundary_t else pipe.transformer_2
            x = latents.to(model.dtype)
            timestep = _timestep_input(pipe, model, latents, t)

            def predict(embeds):
                return model(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds,
                             return_dict=False)[0]

            if cfg_rank is not None:
                cond, uncond = _exchange_cfg(predict(cond_embeds if cfg_rank == 0 else uncond_embeds), ctx)
            else:
                cond = predict(cond_embeds)
                uncond = predict(uncond_embeds) if uncond_embeds is not None else None
            noise = cond if uncond is None else uncond + params.guidance_scale * (cond - uncond)
            latents = pipe.scheduler.step(noise, t, latents, return_dict=False)[0]
            timer.step_done()
            bar.update()
    return latents


def _timestep_input(pipe, model, latents, t):
    if not pipe.config.expand_timesteps:
        return t.expand(latents.shape[0])
    # Wan2.2 TI2V: one timestep per patch token (all equal for text-to-video).
    _, ph, pw = model.config.patch_size
    f, h, w = latents.shape[2:]
    return torch.full((latents.shape[0], f * (h // ph) * (w // pw)), float(t), device=latents.device,
                      dtype=torch.float32)


def _exchange_cfg(pred, ctx):
    """(cond, uncond) on both CFG halves from each half's own prediction: one all-gather."""
    import torch.distributed as dist

    b = pred.shape[0]
    # Concatenated along the batch (gloo takes no stacked output): [cond batch; uncond batch].
    both = torch.empty((2 * b,) + tuple(pred.shape[1:]), dtype=pred.dtype, device=pred.device)
    dist.all_gather_into_tensor(both, pred.contiguous(), group=ctx.cfg_group)
    return both[:b], both[b:]


def _decode(pipe, params, latents, ctx, notes):
    vae = pipe.vae
    z = latents.to(vae.device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z)
    z = z / inv_std + mean
    rank = ctx.rank if ctx is not None else 0
    if ctx is not None and ctx.world_size > 1 and params.parallel_vae:
        video = _parallel_decode(vae, z, params, notes)
    else:
        video = vae.decode(z, return_dict=False)[0] if rank == 0 else None
    if video is None:
        return None
    frames = pipe.video_processor.postprocess_video(video, output_type="pt")[0]  # [F, C, H, W] in [0, 1]
    return frames.permute(0, 2, 3, 1).float().cpu()


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
