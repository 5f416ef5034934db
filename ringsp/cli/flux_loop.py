"""The FLUX.1 parts of the generation loop (`FluxPipeline.__call__` of diffusers, text-to-image):
prompt encoding (pooled CLIP + T5 embeddings and the text position ids), packed latents and
their position ids, the flow-matching schedule shifted by `mu`, the transformer call with the
distilled guidance, and unpacking for the VAE. ringsp.cli.generation runs them stage by stage.

FLUX.1-dev is guidance-distilled: the guidance scale is an input of the transformer and there
is no negative pass (diffusers' optional true CFG is not run). Unlike diffusers, the latents
go through the VAE in the VAE's dtype (diffusers keeps the transformer's).
"""
import numpy as np
import torch


class FluxRun:
    """One generation with a FluxPipeline; the methods are called in the order of the stages."""

    cfg = False  # the guidance is embedded: generation runs no unconditional pass

    def __init__(self, pipe, params, device):
        self.pipe, self.params, self.device = pipe, params, device
        # diffusers keeps latents in the prompt embeddings' dtype, i.e. the T5 encoder's
        self.dtype = pipe.text_encoder_2.dtype
        self.img_ids = None

    def validate(self):
        pipe, p = self.pipe, self.params
        if p.num_frames != 1:
            raise ValueError(f"FLUX.1 makes one image: num_frames must be 1, got {p.num_frames}")
        if p.image is not None:
            raise ValueError("image is an input of edit pipelines; FluxPipeline (text-to-image) takes none")
        mult = pipe.vae_scale_factor * 2
        if p.height < mult or p.width < mult or p.height % mult or p.width % mult:
            raise ValueError(f"height and width must be positive multiples of {mult} (VAE stride "
                             f"{pipe.vae_scale_factor} x packing 2), got ({p.height}, {p.width})")
        pipe.check_inputs(p.prompt, None, p.height, p.width, max_sequence_length=p.max_sequence_length)

    def encode(self, prompt):
        """(T5 embeddings, pooled CLIP embeddings, text position ids) of one prompt."""
        return self.pipe.encode_prompt(prompt=prompt, prompt_2=None, device=self.device, num_images_per_prompt=1,
                                       max_sequence_length=self.params.max_sequence_length)

    def initial_latents(self):
        p = self.params
        # Drawn on the CPU from the seed: the same bits on every rank and every device type.
        generator = torch.Generator("cpu").manual_seed(p.seed)
        latents, self.img_ids = self.pipe.prepare_latents(1, self.pipe.transformer.config.in_channels // 4, p.height,
                                                          p.width, self.dtype, torch.device("cpu"), generator)
        self.img_ids = self.img_ids.to(self.device)
        return latents.to(self.device)

    def timesteps(self, latents):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        steps, config = self.params.steps, self.pipe.scheduler.config
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        # The schedule's shift grows with the number of image tokens.
        mu = calculate_shift(latents.shape[1], config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.15))
        timesteps, _ = retrieve_timesteps(self.pipe.scheduler, steps, self.device, sigmas=sigmas, mu=mu)
        self.pipe.scheduler.set_begin_index(0)
        return timesteps

    def predict(self, latents, t, cond):
        embeds, pooled, text_ids = cond
        transformer = self.pipe.transformer
        guidance = None
        if transformer.config.guidance_embeds:
            guidance = torch.full([1], self.params.guidance_scale, device=latents.device, dtype=torch.float32)
            guidance = guidance.expand(latents.shape[0])
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        return transformer(hidden_states=latents, timestep=timestep / 1000, guidance=guidance,
                           pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                           img_ids=self.img_ids, joint_attention_kwargs={}, return_dict=False)[0]

    def vae_input(self, latents):
        pipe, vae = self.pipe, self.pipe.vae
        z = pipe._unpack_latents(latents, self.params.height, self.params.width, pipe.vae_scale_factor)
        z = (z / vae.config.scaling_factor) + vae.config.shift_factor
        return z.to(vae.device, vae.dtype)

    def to_frames(self, decoded):
        image = self.pipe.image_processor.postprocess(decoded, output_type="pt")  # [B, 3, H, W] in [0, 1]
        return image.permute(0, 2, 3, 1).float().cpu()
