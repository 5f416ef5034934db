"""The Wan parts of the generation loop (`WanPipeline.__call__`, text-to-video): prompt
encoding, latents, the transformer call (Wan2.2 A14B's two experts, TI2V's per-token
timesteps), CFG, and latent de-normalisation. ringsp.cli.generation runs them stage by stage."""
import torch


class WanRun:
    """One generation with a WanPipeline; the methods are called in the order of the stages."""

    def __init__(self, pipe, params, device):
        self.pipe, self.params, self.device = pipe, params, device
        self.transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2

    def validate(self):
        pipe, p = self.pipe, self.params
        pipe.check_inputs(p.prompt, p.negative_prompt, p.height, p.width)
        _, ph, pw = self.transformer.config.patch_size
        sh, sw = pipe.vae_scale_factor_spatial * ph, pipe.vae_scale_factor_spatial * pw
        if p.height % sh or p.width % sw:
            raise ValueError(f"height and width must be multiples of ({sh}, {sw}), got ({p.height}, {p.width})")
        if p.num_frames < 1 or (p.num_frames - 1) % pipe.vae_scale_factor_temporal:
            raise ValueError(f"num_frames must be {pipe.vae_scale_factor_temporal}k+1, got {p.num_frames}")
        if p.image is not None:
            raise ValueError("image is an input of edit pipelines; WanPipeline (text-to-video) takes none")

    def encode(self, prompt):
        # WanPipeline.encode_prompt encodes the prompt and the negative prompt one at a time
        # anyway, so encoding each branch alone gives the same embeddings.
        return self.pipe.encode_prompt(prompt, do_classifier_free_guidance=False,
                                       max_sequence_length=self.params.max_sequence_length, device=self.device,
                                       dtype=self.transformer.dtype)[0]

    def initial_latents(self):
        # Drawn on the CPU from the seed: the same bits on every rank and every device type.
        p = self.params
        generator = torch.Generator("cpu").manual_seed(p.seed)
        latents = self.pipe.prepare_latents(1, self.transformer.config.in_channels, p.height, p.width, p.num_frames,
                                            torch.float32, torch.device("cpu"), generator)
        return latents.to(self.device)

    def timesteps(self, latents):
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(self.params.steps, device=self.device)
        scheduler.set_begin_index(0)
        return scheduler.timesteps

    def predict(self, latents, t, embeds):
        pipe = self.pipe
        boundary = pipe.config.boundary_ratio
        # Wan2.2 A14B: the high-noise expert above the boundary, the low-noise one below.
        if boundary is None or t >= boundary * pipe.scheduler.config.num_train_timesteps:
            model = pipe.transformer
        else:
            model = pipe.transformer_2
        return model(hidden_states=latents.to(model.dtype), timestep=self._timestep(model, latents, t),
                     encoder_hidden_states=embeds, return_dict=False)[0]

    def _timestep(self, model, latents, t):
        if not self.pipe.config.expand_timesteps:
            return t.expand(latents.shape[0])
        # Wan2.2 TI2V: one timestep per patch token (all equal for text-to-video).
        _, ph, pw = model.config.patch_size
        f, h, w = latents.shape[2:]
        return torch.full((latents.shape[0], f * (h // ph) * (w // pw)), float(t), device=latents.device,
                          dtype=torch.float32)

    def guide(self, cond, uncond):
        return uncond + self.params.guidance_scale * (cond - uncond)

    def vae_input(self, latents):
        vae = self.pipe.vae
        z = latents.to(vae.device, vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z)
        return z / inv_std + mean

    def to_frames(self, decoded):
        frames = self.pipe.video_processor.postprocess_video(decoded, output_type="pt")[0]  # [F, C, H, W] in [0, 1]
        return frames.permute(0, 2, 3, 1).float().cpu()
