"""`ringsp generate` arguments: the parser, and their checks into a GenerateRequest.

Every mistake a user can make in the arguments ends here, before any process starts, as
one line in argparse's style (`ringsp generate: error: ...`, exit code 2): degrees that do
not multiply to --num-gpus, more GPUs than present, sizes the model cannot take, a
missing or malformed model directory, a missing or unreadable --image.
"""
import argparse
import datetime
import hashlib
import os
import sys

from ringsp.models.pipelines import MODEL_NAMES, TINY_NAME, ModelDirError, inspect_model_dir, model_info

from .devices import DEVICE_CHOICES, DeviceError, accelerator_count, default_dtype, resolve_device
from .output import output_path, writer_problem
from .request import DEFAULT_TIMEOUT_S, GenerateRequest

PROG = "ringsp generate"
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".gif")
IMAGE_SUFFIXES = (".png",)
DEFAULT_PROMPT = "a cat is playing piano"
# The largest seed torch.Generator.manual_seed takes (negative ones alias 2**64 + seed: refused).
MAX_SEED = 2**64 - 1
# The no-argument run: the embedded tiny model, 2 gloo processes on a ring, checked
# against a single-process run of the same generation.
# The parallel VAE is forced on (its size threshold would give such a small decode to rank 0).
DEMO_ARGV = ["--model", TINY_NAME, "--device", "cpu", "--num-gpus", "2", "--ring-degree", "2", "--compare-single",
             "--vae-min-parallel-pixels", "0"]
# Flags that only say where results go: given alone, the run is still the demo.
OUTPUT_ONLY_DESTS = frozenset({"output", "no_output", "json"})


class UsageError(Exception):
    """A bad argument: reported as one line and exit code 2. `field` is the GenerateRequest
    field it is about, where there is one (ringsp serve names the request field from it)."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


def flag_name(field):
    """How the checks name a request field on the command line: height -> --height."""
    return "--" + field.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser():
    p = _Parser(prog=PROG, description="Generate a video (Wan, LTX-Video) or an image (Qwen-Image, Qwen-Image-Edit, "
                "FLUX.1) under sequence parallelism and print the stage time breakdown and peak memory. With no "
                "arguments: a built-in tiny Wan model on 2 CPU processes, checked against one process; --output, "
                "--no-output and --json alone keep that demo.")
    add_model_args(p)
    add_generation_args(p)
    add_parallel_args(p)
    run = add_run_args(p)
    out = run.add_mutually_exclusive_group()
    out.add_argument("--output", metavar="FILE", help="video models: a video (mp4 via imageio-ffmpeg); image "
                     "models: a .png image; "
                     "default: outputs/<model>_<config>.mp4 / .png")
    out.add_argument("--no-output", action="store_true", help="do not write the video / image")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --output file (without it, "
                     "an existing file is refused; a default path that exists gets the next free -2, -3, ... name)")
    run.add_argument("--json", metavar="REPORT", help="write the stage times and memory as JSON")
    run.add_argument("--compare-single", action="store_true",
                     help="also run in one process and print the max abs difference of frames and latents")
    return p


def add_model_args(p):
    model = p.add_argument_group("model")
    src = model.add_mutually_exclusive_group()
    src.add_argument("--model-path", metavar="DIR", help="local diffusers directory of a WanPipeline, "
                     "QwenImagePipeline, QwenImageEditPipeline, FluxPipeline or LTXPipeline (the kind is read from its "
                     "model_index.json)")
    src.add_argument("--model", choices=MODEL_NAMES, help="published config (with --dummy-weights) or a tiny model")
    model.add_argument("--dummy-weights", action="store_true",
                       help="random weights of the published shapes (small random text encoders stand in for "
                       "UMT5-XXL / Qwen2.5-VL-7B / CLIP-L and T5-XXL)")
    model.add_argument("--full-text-encoder", action="store_true",
                       help="with --dummy-weights: build the full text encoder (random) instead")


def add_generation_args(p, title="generation"):
    gen = p.add_argument_group(title)
    gen.add_argument("--prompt", default=DEFAULT_PROMPT)
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--image", metavar="PATH", help="the input image of edit models (qwen-image-edit)")
    gen.add_argument("--image-area", type=int, metavar="PIXELS",
                     help="edit models: the input image is resized to about this many pixels at its aspect ratio "
                     "(default: 1048576 = 1024 x 1024, as diffusers does; tiny models: 4096)")
    gen.add_argument("--height", type=int, help="pixels; default: the model's (edit: the resized input image's)")
    gen.add_argument("--width", type=int, help="pixels; default: the model's (edit: the resized input image's)")
    gen.add_argument("--num-frames", type=int, help="4k+1 for Wan, 8k+1 for LTX-Video, 1 for image models; "
                     "default: the model's")
    gen.add_argument("--steps", type=int, help="denoising steps; default: the model's")
    gen.add_argument("--guidance-scale", type=float, help="CFG scale (> 1: guidance on; Qwen: true_cfg_scale with "
                     "the negative prompt; FLUX.1-dev: its distilled guidance, no negative pass); default: the model's")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--fps", type=float, help="frames per second of the video; default: the model's (16 for "
                     "Wan2.1 and Wan2.2 A14B, 24 for Wan2.2-TI2V-5B, 25 for LTX-Video)")
    gen.add_argument("--max-sequence-length", type=int, help="text tokens; default: the model's (512)")
    return gen


def add_parallel_args(p):
    par = p.add_argument_group("parallelism")
    par.add_argument("--num-gpus", type=int, help="processes (one per GPU / NPU; gloo processes on CPU); "
                     "default: ulysses x ring x cfg, or WORLD_SIZE under torchrun")
    par.add_argument("--ulysses-degree", type=int)
    par.add_argument("--ring-degree", type=int)
    par.add_argument("--cfg-parallel", action="store_true", help="cond / uncond passes on two halves of the GPUs")
    par.add_argument("--no-parallel-vae", action="store_true", help="decode on rank 0 alone")
    par.add_argument("--vae-min-parallel-pixels", type=int, metavar="N",
                     help="decodes of fewer output pixels x frames run on rank 0 alone (default: ringsp.vae's)")


def add_run_args(p, warmup_help="first run an untimed generation of N steps (fills kernel autotune and cuDNN "
                 "caches)", warmup_default=0):
    run = p.add_argument_group("run")
    run.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                     help="auto: CUDA, else an Ascend NPU (torch_npu), else CPU")
    run.add_argument("--dtype", choices=("auto",) + tuple(DTYPES), default="auto",
                     help="transformer and text encoder (auto: bf16 on CUDA and NPU, fp32 on CPU)")
    run.add_argument("--vae-dtype", choices=tuple(DTYPES), default="float32")
    run.add_argument("--warmup-steps", type=int, default=warmup_default, metavar="N", help=warmup_help)
    run.add_argument("--compile", nargs="?", const="regional", choices=("regional", "full"), metavar="MODE",
                     help="torch.compile the transformer(s): regional (the default MODE: each repeated block, as "
                     "diffusers' compile_repeated_blocks) or full (the whole forward); an untimed warm-up "
                     "generation compiles first")
    run.add_argument("--attention-precision", choices=("bf16", "native", "fp8", "int8"), default="bf16",
                     help="the SP self-attention: bf16 / native = the run's dtype (default); fp8 or int8 = 8-bit "
                     "attention inside (CUDA GPUs with compute capability >= 8.9 / 8.0; measured speed and "
                     "accuracy in bench/RESULTS.md)")
    run.add_argument("--cuda-graphs", action="store_true",
                     help="CUDA graphs of each transformer block with the SP attention left outside them "
                     "(piecewise; through torch.compile, so it implies --compile); CUDA only")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                     help="the process group's timeout: a collective that waits longer (a stuck or lost rank) ends "
                     "the run with an error instead of a hang (default: %(default)g)")
    return run


def parse_request(argv, env=None):
    """A validated GenerateRequest from argv; raises UsageError with a one-line message."""
    env = os.environ if env is None else env
    argv = list(argv)
    demo = not (given_options(argv) - OUTPUT_ONLY_DESTS)
    args = build_parser().parse_args(DEMO_ARGV + argv if demo else argv)
    return request_from_args(args, model_of(args), env, demo=demo)


def request_from_args(args, info, env, demo=False, name=flag_name):
    """The GenerateRequest of parsed arguments of the model `info` (from model_of(args)).
    ringsp serve calls it once per HTTP request with the request's fields set on a copy of
    its own arguments, and `name` saying how those fields are called there."""
    image, reference_size = _image(args, info, name)
    sizes = _sizes(args, info, reference_size, name)
    device = _device(args.device)
    world, local_world = _world(args, env)
    u, r, cfg = _degrees(args, world, sizes["guidance_scale"], name)
    num_gpus = u * r * cfg
    _check_devices(device, num_gpus, local_world if world is not None else num_gpus)
    dtype = _dtype(args.dtype, device)
    label = f"u{u}r{r}" + ("c2" if cfg == 2 else "")
    suffixes = IMAGE_SUFFIXES if info.makes_images else VIDEO_SUFFIXES
    output = None if args.no_output else (args.output or os.path.join("outputs", f"{info.name}_{label}{suffixes[0]}"))
    _check_output(output, "--output", suffixes)
    try:
        output = output_path(output, given=args.output is not None, overwrite=args.overwrite)
    except ValueError as exc:
        raise UsageError(f"--output {output!r} {exc}") from None
    _check_writer(output)
    _check_output(args.json, "--json", (".json",))
    return GenerateRequest(
        model_name=args.model if args.model_path is None else None, model_path=args.model_path,
        model_label=info.name, full_text_encoder=args.full_text_encoder,
        prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed, **sizes, **image,
        num_gpus=num_gpus, ulysses_degree=u, ring_degree=r, cfg_degree=cfg,
        parallel_vae=not args.no_parallel_vae, vae_min_parallel_pixels=args.vae_min_parallel_pixels,
        device=device, dtype=dtype, vae_dtype=DTYPES[args.vae_dtype], output=output, json_path=args.json,
        compare_single=args.compare_single, warmup_steps=args.warmup_steps, demo=demo, timeout_s=_timeout(args),
        **_compile_options(args, device),
        under_torchrun=world is not None, media="image" if info.makes_images else "video",
        fps=_fps(args, info, name),
    )


def given_options(argv):
    """The dests of the options argv sets, however spelt (abbreviated, `--opt=value`)."""
    parser, unset = build_parser(), object()
    # argparse fills in defaults only for names the namespace lacks, so `unset` marks what argv left alone
    given = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), unset)))
    return {dest for dest, value in vars(given).items() if value is not unset}


def model_of(args):
    """The ModelInfo the arguments name (the model directory's files checked)."""
    if args.model_path is not None:
        if args.dummy_weights or args.full_text_encoder:
            raise UsageError("--dummy-weights / --full-text-encoder go with --model NAME; --model-path loads "
                             "the weights in DIR")
        try:
            return inspect_model_dir(args.model_path, check_weights=True)
        except ModelDirError as exc:
            raise UsageError(str(exc)) from None
    args.model = args.model or TINY_NAME
    tiny = args.model.startswith("tiny-")
    if not tiny and not args.dummy_weights:
        raise UsageError(f"--model {args.model} needs --dummy-weights (no weights are downloaded); "
                         "for real weights give --model-path DIR")
    if args.full_text_encoder and tiny:
        raise UsageError(f"--full-text-encoder applies to the published models, not {args.model}")
    return model_info(args.model)


def _image(args, info, name):
    """({image, image_digest, image_area} request fields, (width, height) the image is resized
    to) for edit models, the image checked readable; ({}, None) for the others."""
    if not info.edit:
        for field in ("image", "image_area"):
            if getattr(args, field) is not None:
                raise UsageError(f"{name(field)} is for edit models (qwen-image-edit); {info.name} takes no input "
                                 "image", field)
        return {}, None
    if args.image is None:
        raise UsageError(f"{info.name} edits an input image: give it with {name('image')} PATH", "image")
    area = args.image_area if args.image_area is not None else info.defaults.image_area
    if area < 1:
        raise UsageError(f"{name('image_area')} must be >= 1, got {area}", "image_area")
    from .qwen_loop import load_image, reference_size

    try:
        image = load_image(args.image, what=name("image"))
        with open(args.image, "rb") as f:  # ranks started with different files must not agree
            digest = hashlib.sha256(f.read()).hexdigest()
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc), "image") from None
    try:
        size = reference_size(image.size, area)
    except ValueError as exc:
        raise UsageError(f"{name('image')} {args.image!r} with {name('image_area')} {area}: {exc}", "image") from None
    return {"image": args.image, "image_digest": digest, "image_area": area}, size


def _sizes(args, info, reference_size, name):
    d = info.defaults
    width, height = reference_size or (d.width, d.height)
    sizes = {"height": _pick(args.height, height), "width": _pick(args.width, width),
             "num_frames": _pick(args.num_frames, d.num_frames), "steps": _pick(args.steps, d.steps),
             "guidance_scale": _pick(args.guidance_scale, d.guidance_scale),
             "max_sequence_length": _pick(args.max_sequence_length, d.max_sequence_length)}
    mh, mw = info.size_multiple
    for field, mult in (("height", mh), ("width", mw)):
        value = sizes[field]
        if value < mult or value % mult:
            raise UsageError(f"{name(field)} {value}: {info.name} needs a positive multiple of {mult} "
                             f"(VAE stride {info.vae_scale_spatial} x patch size {mult // info.vae_scale_spatial})",
                             field)
    _check_frames(sizes["num_frames"], info, name)
    if args.vae_min_parallel_pixels is not None and args.vae_min_parallel_pixels < 0:
        raise UsageError(f"{name('vae_min_parallel_pixels')} must be >= 0, got {args.vae_min_parallel_pixels}",
                         "vae_min_parallel_pixels")
    for field in ("steps", "max_sequence_length"):
        if sizes[field] < 1:
            raise UsageError(f"{name(field)} must be >= 1, got {sizes[field]}", field)
    _check_model_limits(sizes, args, info, name)
    if not sizes["guidance_scale"] >= 0:
        raise UsageError(f"{name('guidance_scale')} must be >= 0, got {sizes['guidance_scale']}", "guidance_scale")
    if args.warmup_steps < 0:
        raise UsageError(f"{name('warmup_steps')} must be >= 0, got {args.warmup_steps}", "warmup_steps")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"{name('seed')} must be from 0 to 2**64 - 1 = {MAX_SEED} (what "
                         f"torch.Generator.manual_seed takes), got {args.seed}", "seed")
    return sizes


def _fps(args, info, name):
    if info.makes_images:
        if args.fps is not None:
            raise UsageError(f"{name('fps')} is for video models; {info.name} makes one image", "fps")
        return None
    fps = info.defaults.fps if args.fps is None else args.fps
    if not 0 < fps < float("inf"):
        raise UsageError(f"{name('fps')} must be a finite number > 0, got {fps:g}", "fps")
    return fps


def _check_model_limits(sizes, args, info, name):
    # Schedulers that stretch the sigmas to a terminal shift (Qwen-Image, LTX-Video): one step makes 0 / 0.
    for field, value in (("steps", sizes["steps"]), ("warmup_steps", args.warmup_steps)):
        if 0 < value < info.min_steps:
            raise UsageError(f"{name(field)} {value}: {info.name}'s scheduler needs at least {info.min_steps} steps "
                             "(one gives NaN sigmas)", field)
    limit = info.max_text_tokens
    if limit is not None and sizes["max_sequence_length"] > limit:
        raise UsageError(f"{name('max_sequence_length')} {sizes['max_sequence_length']}: {info.name} takes at most "
                         f"{limit} text tokens", "max_sequence_length")
    if info.guidance != "cfg":  # guidance-distilled (or unguided) FLUX.1: no negative pass to run or split
        for field, given in (("cfg_parallel", getattr(args, "cfg_parallel", False)),
                             ("negative_prompt", args.negative_prompt)):
            if given:
                raise UsageError(f"{name(field)}: {info.name} runs no negative pass (FLUX.1 is distilled: "
                                 f"{name('guidance_scale')} is an input of its transformer, or unused)", field)


def _check_frames(num_frames, info, name):
    if info.makes_images:
        if num_frames != 1:
            raise UsageError(f"{name('num_frames')} {num_frames}: {info.name} makes one image "
                             f"({name('num_frames')} 1)", "num_frames")
        return
    t = info.vae_scale_temporal
    if num_frames < 1 or (num_frames - 1) % t:
        raise UsageError(f"{name('num_frames')} {num_frames}: {info.name} needs {t}k+1 frames (1, {t + 1}, "
                         f"{2 * t + 1}, ...): its VAE compresses time {t}x after the first frame", "num_frames")


def _pick(value, default):
    return default if value is None else value


def _device(choice):
    try:
        return resolve_device(choice)
    except DeviceError as exc:
        raise UsageError(str(exc)) from None


def _world(args, env):
    """(WORLD_SIZE, LOCAL_WORLD_SIZE) under torchrun, (None, None) otherwise."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None, None
    try:
        world = int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise UsageError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} / LOCAL_WORLD_SIZE are not integers") from None
    if args.num_gpus is not None and args.num_gpus != world:
        raise UsageError(f"--num-gpus {args.num_gpus} does not match torchrun's WORLD_SIZE={world}")
    return world, local


def _degrees(args, world, guidance_scale, name=flag_name):
    """(ulysses, ring, cfg): the given ones checked, the missing ones filled in."""
    cfg = 2 if args.cfg_parallel else 1
    if cfg == 2 and not guidance_scale > 1:
        raise UsageError(f"--cfg-parallel needs classifier-free guidance ({name('guidance_scale')} > 1, got "
                         f"{guidance_scale})", "guidance_scale")
    for name in ("num_gpus", "ulysses_degree", "ring_degree"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    n = args.num_gpus if args.num_gpus is not None else world
    u, r = args.ulysses_degree, args.ring_degree
    if n is None:  # no count given: the degrees define it
        return u or 1, r or 1, cfg
    if n % cfg:
        raise UsageError(f"--cfg-parallel splits the GPUs in two halves, but --num-gpus is {n} (odd)")
    sp = n // cfg
    if u is None and r is None:
        u, r = sp, 1  # Ulysses by default, as the seed benchmarks' `sp_degree` does
    elif u is None:
        u = sp // r if sp % r == 0 else 0
    elif r is None:
        r = sp // u if sp % u == 0 else 0
    if not u or not r or u * r * cfg != n:
        given = f"--ulysses-degree {args.ulysses_degree or '-'} x --ring-degree {args.ring_degree or '-'}" + \
                (" x cfg 2" if cfg == 2 else "")
        raise UsageError(f"{given} cannot make --num-gpus {n}: ulysses x ring x cfg must equal the number of GPUs")
    return u, r, cfg


def _check_devices(device, num_gpus, local_processes):
    if device == "cpu":
        return
    present = accelerator_count(device)
    kind = "GPUs" if device == "cuda" else "NPUs"
    if local_processes > present:
        raise UsageError(f"--num-gpus {num_gpus} needs {local_processes} {kind} on this machine but "
                         f"{present} {'is' if present == 1 else 'are'} present")


def _dtype(choice, device):
    return default_dtype(device) if choice == "auto" else DTYPES[choice]


def _check_output(path, flag, suffixes):
    if path is None:
        return
    if os.path.splitext(path)[1].lower() not in suffixes:
        raise UsageError(f"{flag} {path!r} must end with one of {', '.join(suffixes)}")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path!r}: cannot create it (is {parent!r} a writable directory?)")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a directory")


def _check_writer(path):
    """Refuses a run whose result could not be written, before any model work."""
    problem = None if path is None else writer_problem(path)
    if problem:
        raise UsageError(f"--output {path!r}: {problem}; or choose another suffix, or --no-output")


def _timeout(args):
    try:
        ok = args.timeout > 0 and bool(datetime.timedelta(seconds=args.timeout))  # NaN and inf fail here
    except (OverflowError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"--timeout must be a finite number of seconds > 0, got {args.timeout:g}")
    return args.timeout


def _compile_options(args, device):
    if args.cuda_graphs and device != "cuda":
        raise UsageError(f"--cuda-graphs needs --device cuda: CUDA graphs capture CUDA work (on {device}, "
                         "use --compile alone)")
    if args.attention_precision in ("fp8", "int8") and device != "cuda":
        raise UsageError(f"--attention-precision {args.attention_precision} needs --device cuda (8-bit attention "
                         f"has no {device} kernel)")
    return {"compile_mode": args.compile or ("regional" if args.cuda_graphs else None),
            "cuda_graphs": args.cuda_graphs,
            "attention_precision": args.attention_precision if args.attention_precision in ("fp8", "int8") else None}


def describe_request(req):
    """The request as an equivalent command line (for the demo's first line)."""
    parts = ["ringsp generate"]
    parts += ["--model-path", req.model_path] if req.model_path else ["--model", req.model_name]
    parts += ["--device", req.device, "--num-gpus", str(req.num_gpus), "--ulysses-degree", str(req.ulysses_degree),
              "--ring-degree", str(req.ring_degree)]
    if req.cfg_degree == 2:
        parts.append("--cfg-parallel")
    if req.compile_mode:
        parts += ["--compile", req.compile_mode]
    if req.cuda_graphs:
        parts.append("--cuda-graphs")
    if req.attention_precision:
        parts += ["--attention-precision", req.attention_precision]
    if req.compare_single:
        parts.append("--compare-single")
    if req.vae_min_parallel_pixels is not None:
        parts += ["--vae-min-parallel-pixels", str(req.vae_min_parallel_pixels)]
    parts += ["--output", req.output] if req.output else ["--no-output"]
    if req.json_path:
        parts += ["--json", req.json_path]
    return " ".join(parts)


def usage_exit(message, stream=None):
    """Prints `ringsp generate: error: message` (one line) and raises SystemExit(2)."""
    print(f"{PROG}: error: {message}", file=stream or sys.stderr)
    raise SystemExit(2)


