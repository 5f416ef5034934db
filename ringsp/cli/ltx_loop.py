"""The LTX-Video parts of the generation loop (`LTXPipeline.__call__` of diffusers, text-to-video):
prompt encoding (T5 embeddings and their mask), packed video latents, the flow-matching
schedule shifted by `mu`, the transformer call with the latent grid and its rotary
interpolation scale, CFG, and unpacking and de-normalising for the VAE.
ringsp.cli.generation runs them stage by stage.

diffusers batches the negative and the positive prompt into one forward of batch 2; here
they are two forwards of batch 1 (the CFG halves can then run on different ranks), which
agrees with diffusers to float round-off, not bit for bit.
"""
import numpy as np
import torch

FRAME_RATE = 25  # LTXPipeline's default frame_rate: it sets the rotary's temporal scale


class LTXRun:
    """One generation with an LTXPipeline; the methods are called in the order of the stages."""

    def __init__(self, pipe, params, device):
        self.pipe, self.params, self.device = pipe, params, device
        self.dtype = pipe.text_encoder.dtype  # diffusers runs the transformer in the prompt embeddings' dtype
        self.grid = None  # latent (frames, height, width)

    def validate(self):
        pipe, p = self.pipe, self.params
        if p.image is not None:
            raise ValueError("image is an input of edit pipelines; LTXPipeline (text-to-video) takes none")
        if pipe.vae.config.timestep_conditioning:
            raise ValueError("LTX-Video VAEs with timestep_conditioning (0.9.1 and later) are not supported")
        if p.steps < 2 and pipe.scheduler.config.get("shift_terminal"):
            # one sigma stretched to the terminal shift is 0 / 0: every output would be NaN
            raise ValueError(f"LTX-Video's scheduler (shift_terminal) needs at least 2 steps, got {p.steps}")
        spatial = pipe.vae_spatial_compression_ratio * pipe.transformer_spatial_patch_size
        temporal = pipe.vae_temporal_compression_ratio * pipe.transformer_temporal_patch_size
        if p.height < spatial or p.width < spatial or p.height % spatial or p.width % spatial:
            raise ValueError(f"height and width must be positive multiples of {spatial}, got ({p.height}, {p.width})")
        if p.num_frames < 1 or (p.num_frames - 1) % temporal:
            raise ValueError(f"num_frames must be {temporal}k+1, got {p.num_frames}")
        pipe.check_inputs(p.prompt, p.height, p.width)

    def encode(self, prompt):
        """(embeddings, mask) of one prompt."""
        embeds, mask, _, _ = self.pipe.encode_prompt(prompt, do_classifier_free_guidance=False,
                                                     max_sequence_length=self.params.max_sequence_length,
                                                     device=self.device)
        return embeds, mask

    def initial_latents(self):
        pipe, p = self.pipe, self.params
        # Drawn on the CPU from the seed: the same bits on every rank and every device type.
        generator = torch.Generator("cpu").manual_seed(p.seed)
        latents = pipe.prepare_latents(1, pipe.transformer.config.in_channels, p.height, p.width, p.num_frames,
                                       torch.float32, torch.device("cpu"), generator)
        self.grid = ((p.num_frames - 1) // pipe.vae_temporal_compression_ratio + 1,
                     p.height // pipe.vae_spatial_compression_ratio, p.width // pipe.vae_spatial_compression_ratio)
        return latents.to(self.device)

    def timesteps(self, latents):
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift, retrieve_timesteps

        steps, config = self.params.steps, self.pipe.scheduler.config
        # The schedule's shift grows with the number of video tokens.
        mu = calculate_shift(int(np.prod(self.grid)), config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.15))
        timesteps, _ = retrieve_timesteps(self.pipe.scheduler, steps, self.device,
                                          sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        return timesteps

    def predict(self, latents, t, cond):
        embeds, mask = cond
        pipe = self.pipe
        frames, height, width = self.grid
        spatial = pipe.vae_spatial_compression_ratio
        out = pipe.transformer(hidden_states=latents.to(embeds.dtype), encoder_hidden_states=embeds,
                               timestep=t.expand(latents.shape[0]), encoder_attention_mask=mask, num_frames=frames,
                               height=height, width=width,
                               rope_interpolation_scale=(pipe.vae_temporal_compression_ratio / FRAME_RATE, spatial,
                                                         spatial), return_dict=False)[0]
        return out.float()

    def guide(self, cond, uncond):
        return uncond + self.params.guidance_scale * (cond - uncond)

    def vae_input(self, latents):
        pipe, vae = self.pipe, self.pipe.vae
        z = pipe._unpack_latents(latents, *self.grid, pipe.transformer_spatial_patch_size,
                                 pipe.transformer_temporal_patch_size)
        z = pipe._denormalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        return z.to(self.dtype).to(vae.device, vae.dtype)  # through the prompt dtype, as diffusers does

    def to_frames(self, decoded):
        frames = self.pipe.video_processor.postprocess_video(decoded, output_type="pt")[0]  # [F, C, H, W] in [0, 1]
        return frames.permute(0, 2, 3, 1).float().cpu()
