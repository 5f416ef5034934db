"""An HTTP request body, checked into the GenerateRequests the workers run, by the same checks
as `ringsp generate`'s arguments (ringsp.cli.args), each problem a BadRequest naming the
body's field. Nothing here reaches a worker unchecked, and no client string becomes a path:
an edit's input image is decoded here and stored under a name the server chooses."""
import base64
import binascii
import dataclasses
import io
import os
import re
import secrets

from ringsp.cli.args import UsageError, request_from_args

from .bodies import MAX_IMAGES

# The seed range of a random seed (ringsp generate takes any seed >= 0).
_SEED_LIMIT = 2 ** 31
_SIZE_RE = re.compile(r"(\d{1,6})x(\d{1,6})")
# What the checks of ringsp.cli.args call a request field, in the words of the HTTP body.
_NAMES = {"height": "size (height)", "width": "size (width)", "steps": "num_inference_steps"}
_PARAMS = {"height": "size", "width": "size", "steps": "num_inference_steps"}
# Fields that only the server's own flags set: a problem with them is the server's, named as its flag.
_SERVER_FIELDS = ("max_sequence_length", "vae_min_parallel_pixels", "warmup_steps", "image_area")


class BadRequest(ValueError):
    """400: `param` names the body's field at fault."""

    def __init__(self, message, param=None):
        super().__init__(message)
        self.param = param


@dataclasses.dataclass
class Checked:
    """What a body asks for: one GenerateRequest per image (seeds seed, seed + 1, ...) or one video."""
    requests: list
    seed: int
    size: str                        # "WxH" of the output
    num_frames: int
    fps: float | None                # videos: the frame rate they are written at


def check(config, body, kind, tokenizer=None, image_path=None):
    """The Checked form of a parsed body (ringsp.serve.bodies) for the endpoint `kind`
    ("image", "edit" or "video"); raises BadRequest. image_path: where the server stored
    the edit's input image (see store_image)."""
    info = config.info
    check_endpoint(info, kind)
    if body.model is not None and body.model != config.model_id:
        raise BadRequest(f"model {body.model!r} is not served here; this server serves {config.model_id!r}", "model")
    args = config.request_args()
    args.prompt = body.prompt
    if body.negative_prompt is not None:
        args.negative_prompt = body.negative_prompt
    if body.size is not None:
        args.width, args.height = _size(body.size)
    if body.num_inference_steps is not None:
        args.steps = body.num_inference_steps
    if body.guidance_scale is not None:
        args.guidance_scale = body.guidance_scale
    args.seed = body.seed if body.seed is not None else secrets.randbelow(_SEED_LIMIT)
    count = 1
    if kind == "video":
        args.num_frames = _frames(body, info, args.fps or info.defaults.fps)
    else:
        count = body.n
        if not 1 <= count <= MAX_IMAGES:
            raise BadRequest(f"n must be in 1..{MAX_IMAGES}, got {count}", "n")
    if kind == "edit":
        args.image = image_path
    names = _namer(body)
    try:
        first = request_from_args(args, info, env={}, name=names)
    except UsageError as exc:
        raise _bad(exc, body, image_path) from None
    _check_prompt_length(first, tokenizer)
    requests = [dataclasses.replace(first, seed=first.seed + i) for i in range(count)]
    return Checked(requests=requests, seed=first.seed, size=f"{first.width}x{first.height}",
                   num_frames=first.num_frames, fps=first.fps)


def check_endpoint(info, kind):
    """BadRequest if the served model does not make what the endpoint `kind` asks for."""
    if kind == "video" and info.makes_images:
        raise BadRequest(f"{info.name} makes images: use POST /v1/images/"
                         f"{'edits' if info.edit else 'generations'}", "model")
    if kind != "video" and not info.makes_images:
        raise BadRequest(f"{info.name} makes videos: use POST /v1/videos", "model")
    if kind == "edit" and not info.edit:
        raise BadRequest(f"{info.name} takes no input image: use POST /v1/images/generations", "image")
    if kind == "image" and info.edit:
        raise BadRequest(f"{info.name} edits an input image: use POST /v1/images/edits", "image")


def _size(text):
    m = _SIZE_RE.fullmatch(text)
    if not m:
        raise BadRequest(f"size must be 'WIDTHxHEIGHT' in pixels, e.g. '832x480', got {text!r}", "size")
    return int(m.group(1)), int(m.group(2))


def _frames(body, info, fps):
    """num_frames from the body's num_frames, or from seconds at the video's frame rate
    (rounded to the nearest count the VAE takes)."""
    if body.seconds is not None and body.num_frames is not None:
        raise BadRequest("give seconds or num_frames, not both", "seconds")
    if body.seconds is None:
        return body.num_frames  # None: the model's default
    try:
        seconds = float(body.seconds)
    except ValueError:
        raise BadRequest(f"seconds must be a number, got {body.seconds!r}", "seconds") from None
    if not seconds > 0 or seconds > 3600:
        raise BadRequest(f"seconds must be > 0 (and at most 3600), got {body.seconds!r}", "seconds")
    t = info.vae_scale_temporal
    return t * max(0, round(seconds * fps / t)) + 1


def _namer(body):
    def name(field):
        if field in _SERVER_FIELDS:
            return "--" + field.replace("_", "-")
        if field == "num_frames" and _given(body, "seconds"):
            return "seconds (as frames)"
        return _NAMES.get(field, field)

    return name


def _given(body, field):
    return getattr(body, field, None) is not None


def _bad(exc, body, image_path):
    field = exc.field
    param = _PARAMS.get(field, field)
    if field == "num_frames" and _given(body, "seconds"):
        param = "seconds"
    message = str(exc)
    if image_path is not None:  # the server's own file name is no business of the client
        message = message.replace(repr(image_path), "(the input image)").replace(image_path, "(the input image)")
    if field in _SERVER_FIELDS:
        message = f"the server's {message}"
    return BadRequest(message, param)


def _check_prompt_length(request, tokenizer):
    """A prompt longer than the model takes would be cut silently: refused instead."""
    if tokenizer is None:
        return
    limit = request.max_sequence_length
    for field in ("prompt", "negative_prompt"):
        text = getattr(request, field)
        if not text:
            continue
        tokens = len(tokenizer(text).input_ids)
        if tokens > limit:
            raise BadRequest(f"{field} is {tokens} tokens long; {request.model_label} takes at most {limit} "
                             "(a longer one would be cut)", field)


def store_image(data, folder, name):
    """Decodes the edit's input image (base64, or a data: URL of it), checks that it is an
    image, and stores its bytes as folder/name (a server-chosen name); returns the path."""
    import PIL.Image

    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if ";base64" not in header:
            raise BadRequest("image: a data: URL must be base64 (data:image/png;base64,...)", "image")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image must be base64 (or a data: URL) of a PNG, JPEG or WebP file", "image") from None
    try:
        with PIL.Image.open(io.BytesIO(raw)) as img:
            img.verify()
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
        raise BadRequest(f"image is not a readable image ({exc})", "image") from None
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(raw)
    return path

