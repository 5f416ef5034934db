"""The JSON bodies of the generation endpoints, in OpenAI's shapes plus SGLang's extensions
(negative_prompt, num_inference_steps, guidance_scale). Strict: a field of the wrong type or
one not listed here is refused (400 naming it) rather than ignored."""
from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr

# OpenAI's bound on images per request.
MAX_IMAGES = 10


class _Generation(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str
    model: str | None = None             # if given: the served model's id (GET /v1/models)
    negative_prompt: str | None = None
    size: str | None = None              # "WxH" in pixels; default: the model's (edit: the resized input's)
    seed: int | None = None              # default: a random one, returned with the result
    num_inference_steps: int | None = None
    guidance_scale: float | None = None


class ImageGeneration(_Generation):
    n: int = 1
    response_format: Literal["b64_json"] = "b64_json"


class ImageEdit(ImageGeneration):
    image: str                           # the input image: base64 (or a data: URL) of a PNG / JPEG / WebP


class VideoCreate(_Generation):
    seconds: StrictStr | StrictInt | StrictFloat | None = None  # OpenAI sends a string ("4")
    num_frames: int | None = None        # instead of seconds: 4k+1 for Wan
