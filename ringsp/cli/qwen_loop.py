"""The Qwen-Image parts of the generation loop (`QwenImagePipeline.__call__` and
`QwenImageEditPipeline.__call__` of diffusers): prompt encoding (with the input image for
Edit), packed latents and `img_shapes`, the flow-matching schedule shifted by `mu`, the
transformer call, true CFG with its norm rescaling, and unpacking for the VAE.
ringsp.cli.generation runs them stage by stage.

Edit: the input image is resized to about `image_area` pixels at its aspect ratio (diffusers:
1024 x 1024) for both the text encoder (through the processor) and the VAE; its latents
follow the target's tokens in the transformer's sequence and the prediction is cut back to
the target's. Unlike diffusers, the image goes through the VAE in the VAE's dtype (diffusers
passes it in the transformer's dtype, which fails with an fp32 VAE under a bf16 model).
"""
import os

import numpy as np
import torch

DIFFUSERS_IMAGE_AREA = 1024 * 1024


def load_image(image, what="image"):
    """A PIL RGB image from a path (or a PIL image); ValueError naming `what` and the path if
    it cannot be read."""
    import PIL.Image

    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB")
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path or a PIL image, got {type(image).__name__}")
    if not os.path.isfile(image):
        reason = "is not a file" if os.path.exists(image) else "no such file"
        raise ValueError(f"{what} {str(image)!r}: {reason}")
    try:
        with PIL.Image.open(image) as img:
            return img.convert("RGB")
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
        raise ValueError(f"{what} {str(image)!r}: cannot read it as an image ({exc})") from None


def reference_size(image_size, area=None):
    """(width, height) the Edit pipeline resizes an image of `image_size` (w, h) to: about
    `area` pixels (default 1024 x 1024) at its aspect ratio, sides rounded to multiples of 32."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

    area = DIFFUSERS_IMAGE_AREA if area is None else area
    w, h = image_size
    if area < 1 or w < 1 or h < 1:
        raise ValueError(f"image size {w}x{h} and area {area} must be positive")
    width, height, _ = calculate_dimensions(area, w / h)
    if width < 32 or height < 32:
        raise ValueError(f"a {w}x{h} image resized to about {area} pixels has a side under 32 pixels "
                         f"({width}x{height}): use a larger image area or a less elongated image")
    return width, height


class QwenRun:
    """One generation with a QwenImagePipeline or QwenImageEditPipeline."""

    def __init__(self, pipe, params, device):
        from diffusers import QwenImageEditPipeline

        self.pipe, self.params, self.device = pipe, params, device
        self.edit = isinstance(pipe, QwenImageEditPipeline)
        # diffusers keeps latents in the prompt embeddings' dtype, i.e. the text encoder's
        self.dtype = pipe.text_encoder.dtype
        self.height, self.width = params.height, params.width
        self.prompt_image = self.pixels = self.reference = None
        self.image_latents = self.img_shapes = None

    # -- InputValidation -------------------------------------------------------------
    def validate(self):
        pipe, p = self.pipe, self.params
        if pipe.transformer.config.guidance_embeds:
            raise ValueError("guidance-distilled Qwen-Image transformers (guidance_embeds) are not supported")
        if p.num_frames != 1:
            raise ValueError(f"Qwen-Image makes one image: num_frames must be 1, got {p.num_frames}")
        if p.steps < 2 and pipe.scheduler.config.get("shift_terminal"):
            # one sigma stretched to the terminal shift is 0 / 0: every output would be NaN
            raise ValueError(f"Qwen-Image's scheduler (shift_terminal) needs at least 2 steps, got {p.steps}")
        if self.edit:
            self._prepare_image()
        elif p.image is not None:
            raise ValueError("image is an input of QwenImageEditPipeline; QwenImagePipeline takes none")
        # diffusers' defaults: the resized input's size (Edit), else default_sample_size latents
        width, height = self.reference or (pipe.default_sample_size * pipe.vae_scale_factor,) * 2
        self.height = height if self.height is None else self.height
        self.width = width if self.width is None else self.width
        mult = pipe.vae_scale_factor * 2
        if self.height < mult or self.width < mult or self.height % mult or self.width % mult:
            raise ValueError(f"height and width must be positive multiples of {mult} (VAE stride "
                             f"{pipe.vae_scale_factor} x patch 2), got ({self.height}, {self.width})")
        pipe.check_inputs(p.prompt, self.height, self.width, negative_prompt=p.negative_prompt,
                          max_sequence_length=p.max_sequence_length)

    def _prepare_image(self):
        """The reference image as diffusers prepares it: resized for the text encoder, and
        as VAE input [1, 3, 1, H, W] in [-1, 1]."""
        if self.params.image is None:
            raise ValueError("QwenImageEditPipeline edits an input image: image is required")
        image = load_image(self.params.image)
        self.reference = reference_size(image.size, self.params.image_area)
        width, height = self.reference
        processor = self.pipe.image_processor
        self.prompt_image = processor.resize(image, height, width)
        self.pixels = processor.preprocess(self.prompt_image, height, width).unsqueeze(2)

    # -- TextEncoding ----------------------------------------------------------------
    def encode(self, prompt):
        """(embeddings, mask) of one prompt; the mask is None when every token is valid."""
        kw = {"image": self.prompt_image} if self.edit else {}
        return self.pipe.encode_prompt(prompt=prompt, device=self.device, num_images_per_prompt=1,
                                       max_sequence_length=self.params.max_sequence_length, **kw)

    # -- LatentPreparation -----------------------------------------------------------
    def initial_latents(self):
        pipe = self.pipe
        channels = pipe.transformer.config.in_channels // 4
        # Drawn on the CPU from the seed: the same bits on every rank and every device type.
        generator = torch.Generator("cpu").manual_seed(self.params.seed)
        shape_args = (1, channels, self.height, self.width, self.dtype, torch.device("cpu"), generator)
        latents = pipe.prepare_latents(None, *shape_args)[0] if self.edit else pipe.prepare_latents(*shape_args)
        scale = pipe.vae_scale_factor * 2
        grids = [(1, self.height // scale, self.width // scale)]
        if self.edit:
            self.image_latents = self._encode_image(channels)
            grids.append((1, self.reference[1] // scale, self.reference[0] // scale))
        self.img_shapes = [grids]
        return latents.to(self.device)

    def _encode_image(self, channels):
        vae = self.pipe.vae
        latents = self.pipe._encode_vae_image(self.pixels.to(vae.device, vae.dtype), generator=None)  # the mode
        latents = latents.to(self.device, self.dtype)
        return self.pipe._pack_latents(latents, 1, channels, latents.shape[3], latents.shape[4])

    # -- TimestepPreparation ---------------------------------------------------------
    def timesteps(self, latents):
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift, retrieve_timesteps

        steps = self.params.steps
        config = self.pipe.scheduler.config
        # The schedule's shift grows with the number of target image tokens.
        mu = calculate_shift(latents.shape[1], config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.15))
        timesteps, _ = retrieve_timesteps(self.pipe.scheduler, steps, self.device,
                                          sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        self.pipe.scheduler.set_begin_index(0)
        return timesteps

    # -- Denoising -------------------------------------------------------------------
    def predict(self, latents, t, cond):
        embeds, mask = cond
        x = latents if self.image_latents is None else torch.cat([latents, self.image_latents], dim=1)
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        out = self.pipe.transformer(hidden_states=x, timestep=timestep / 1000, guidance=None,
                                    encoder_hidden_states_mask=mask, encoder_hidden_states=embeds,
                                    img_shapes=self.img_shapes, attention_kwargs={}, return_dict=False)[0]
        return out[:, :latents.shape[1]]  # Edit: the reference image's tokens are not predicted

    def guide(self, cond, uncond):
        # true CFG, rescaled per token to the conditional prediction's norm
        combined = uncond + self.params.guidance_scale * (cond - uncond)
        return combined * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True))

    # -- Decoding --------------------------------------------------------------------
    def vae_input(self, latents):
        vae = self.pipe.vae
        z = self.pipe._unpack_latents(latents, self.height, self.width, self.pipe.vae_scale_factor)
        z = z.to(vae.device, vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(z)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(z)
        return z / inv_std + mean

    def to_frames(self, decoded):
        image = self.pipe.image_processor.postprocess(decoded[:, :, 0], output_type="pt")  # [B, 3, H, W] in [0, 1]
        return image.permute(0, 2, 3, 1).float().cpu()
