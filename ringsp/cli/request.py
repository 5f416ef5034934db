"""GenerateRequest: one validated `ringsp generate` run, as sent to every worker process."""
from dataclasses import dataclass

import torch

from .generation import GenerationParams

# The process group's timeout (--timeout): a collective waiting longer ends in an error, not a hang.
DEFAULT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class GenerateRequest:
    model_name: str | None          # a name of ringsp.models.pipelines.MODEL_NAMES (dummy weights) ...
    model_path: str | None          # ... or a local diffusers directory
    model_label: str                # for reports and file names
    prompt: str
    negative_prompt: str
    height: int
    width: int
    num_frames: int
    steps: int
    guidance_scale: float
    seed: int
    max_sequence_length: int
    num_gpus: int
    ulysses_degree: int
    ring_degree: int
    cfg_degree: int
    device: str                     # "cpu", "cuda" or "npu"
    dtype: str                      # torch dtype name, e.g. "bfloat16"
    vae_dtype: str
    parallel_vae: bool = True
    vae_min_parallel_pixels: int | None = None
    full_text_encoder: bool = False
    output: str | None = None
    json_path: str | None = None
    compare_single: bool = False
    warmup_steps: int = 0
    compile_mode: str | None = None  # torch.compile of the transformer(s): "regional", "full" or None
    cuda_graphs: bool = False       # piecewise CUDA graphs (with compile_mode)
    attention_precision: str | None = None  # None (the run's dtype), "fp8" or "int8"
    demo: bool = False
    under_torchrun: bool = False
    media: str = "video"            # what the model makes: "video" (Wan) or "image" (Qwen-Image)
    image: str | None = None        # edit models: the input image's path ...
    image_digest: str | None = None  # ... its sha256, so ranks given different files fail together
    image_area: int | None = None   # ... and the pixels it is resized to
    timeout_s: float = DEFAULT_TIMEOUT_S  # the process group's timeout
    fps: float | None = None        # videos: frames per second written (--fps, else the model's); None for images

    @property
    def torch_dtype(self):
        return getattr(torch, self.dtype)

    @property
    def torch_vae_dtype(self):
        return getattr(torch, self.vae_dtype)

    @property
    def label(self):
        return f"u{self.ulysses_degree}r{self.ring_degree}" + ("c2" if self.cfg_degree == 2 else "")

    def params(self):
        return GenerationParams(
            prompt=self.prompt, negative_prompt=self.negative_prompt, height=self.height, width=self.width,
            num_frames=self.num_frames, steps=self.steps, guidance_scale=self.guidance_scale, seed=self.seed,
            max_sequence_length=self.max_sequence_length, parallel_vae=self.parallel_vae,
            vae_min_parallel_pixels=self.vae_min_parallel_pixels, image=self.image, image_area=self.image_area)
