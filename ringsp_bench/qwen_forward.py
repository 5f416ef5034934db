"""Qwen-Image transformer forward under sequence parallelism: ringsp vs diffusers' context parallel vs 1 GPU.

    torchrun --nproc_per_node 1 -m ringsp_bench.qwen_forward --json qwen_fwd_w1.json
    torchrun --nproc_per_node 2 -m ringsp_bench.qwen_forward --json qwen_fwd_w2.json
    torchrun --nproc_per_node 4 -m ringsp_bench.qwen_forward --json qwen_fwd_w4.json
    ... --edit             (Qwen-Image-Edit: a reference image of the same size joins the image stream)
    ... --text-valid 256   (no text padding: the mask is dropped, as the pipelines do when it is all ones)

One run per world size W; the same structure and helpers as ringsp_bench.wan_forward. On the same
model (Qwen-Image's published config, 20B, random bf16 weights) and inputs (B=1; text
--text-len x 3584 of which the first --text-valid tokens are valid, passed with
encoder_hidden_states_mask), it times:
  diffusers-1gpu  diffusers' own forward on rank 0 alone (the others wait): the baseline
  ringsp          ringsp.enable_sequence_parallel for every (ulysses, ring) with u*r = W
  diffusers-cp    diffusers' ContextParallelConfig(ulysses_degree=u, ring_degree=r) through
                  transformer.enable_parallelism, on a clone sharing the weights
diffusers' attention backend is the first of cuDNN / native SDPA that runs with the text mask
(flash takes no mask); diffusers makes it process-wide, so the baseline and diffusers-cp share it.
Shapes: 1328x1328 (latent 166x166, 83x83 = 6889 image tokens; no world size divides it) and
1024x1024 (64x64 = 4096 tokens). Timing, table and JSON as in wan_forward: median of --iters
forwards of the slowest rank, speedup over diffusers-1gpu, max abs error against its output
(relative to its max abs value), peak memory of the busiest rank.

--compile / --cuda-graphs / --skip-eager as in wan_forward (the same helpers).

Without CUDA it prints why and exits 0 (writing a JSON that says so). `--device cpu` with a
tiny model (e.g. `--model tiny-qwen --grid 5,7 --text-len 8 --text-valid 5`) runs the whole
script on gloo, which checks the script, not the speed.
"""
import argparse
import datetime
import os
import sys

import torch
import torch.distributed as dist

from . import wan_forward as wf  # the shared timing, runs and report helpers

RESOLUTIONS = {"1328": (83, 83), "1024": (64, 64)}  # image token grid: pixels / 8 (VAE) / 2 (patch)
MASKED_BACKEND_PREFERENCE = ("_native_cudnn", "native")  # diffusers' flash backends refuse a mask


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen-image", help="a Qwen config name of ringsp.models.configs")
    p.add_argument("--resolutions", default="1328,1024", help=f"comma list of {sorted(RESOLUTIONS)}")
    p.add_argument("--grid", action="append", default=[], metavar="H,W",
                   help="a custom image token grid (repeatable); replaces --resolutions")
    p.add_argument("--edit", action="store_true", help="add a reference image of the target's size (Edit)")
    p.add_argument("--text-len", type=int, default=256)
    p.add_argument("--text-valid", type=int, default=200, help="valid text tokens; the rest is masked padding")
    wf.add_run_args(p)
    args = wf.check_run_args(p, p.parse_args(argv))
    if not 0 <= args.text_valid <= args.text_len:
        p.error("--text-valid must be in [0, --text-len]")
    return args


def shapes(args):
    """[(name, (height, width) of the image token grid)]."""
    if args.grid:
        return [(f"grid{s}", tuple(int(x) for x in s.split(","))) for s in args.grid]
    names = [n.strip() for n in args.resolutions.split(",") if n.strip()]
    unknown = [n for n in names if n not in RESOLUTIONS]
    if unknown:
        raise SystemExit(f"unknown --resolutions {unknown}; known: {sorted(RESOLUTIONS)}")
    return [(n, RESOLUTIONS[n]) for n in names]


# ------------------------------------------------------------------------------ set-up


def build_transformer(name, layers, dtype, device, seed):
    """The config with random weights, equal on all ranks."""
    from diffusers import QwenImageTransformer2DModel

    from ringsp.models import configs

    cfg = configs.transformer_config(name)
    if "joint_attention_dim" not in cfg:
        raise SystemExit(f"--model {name} is not a Qwen-Image config")
    if layers is not None:
        cfg["num_layers"] = layers
    return wf.build_model(QwenImageTransformer2DModel, cfg, dtype, device, seed), cfg


def image_grids(grid, edit):
    """img_shapes' grids of one sample: the target, and for --edit a reference of the same size."""
    target = (1, *grid)
    return [target, target] if edit else [target]


def make_inputs(cfg, grid, args, dtype, device):
    """Forward kwargs (B=1) and the image token count S (target + reference for --edit)."""
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    grids = image_grids(grid, args.edit)
    seq_len = sum(f * h * w for f, h, w in grids)
    mask = None
    if args.text_valid < args.text_len:
        mask = (torch.arange(args.text_len) < args.text_valid).long()[None].to(device)
    inputs = {
        "hidden_states": torch.randn(1, seq_len, cfg["in_channels"], generator=gen).to(device, dtype),
        "encoder_hidden_states": torch.randn(1, args.text_len, cfg["joint_attention_dim"], generator=gen).to(
            device, dtype),
        "encoder_hidden_states_mask": mask,
        "timestep": torch.full((1,), 0.5, device=device),
        "img_shapes": [grids],
        "return_dict": False,
    }
    if cfg.get("use_additional_t_cond"):
        inputs["additional_t_cond"] = torch.zeros(1, dtype=torch.long, device=device)
    return inputs, seq_len


def pick_backend(model, device, dtype, masked):
    """wan_forward's choice, probed with the joint mask Qwen's processor builds
    ([B, 1, 1, T + S] bool) when the text is padded."""
    mask = None
    if masked:
        mask = torch.ones(1, 1, 1, 128, dtype=torch.bool, device=device)
        mask[..., :7] = False
    return wf.pick_backend(model, device, dtype, mask, MASKED_BACKEND_PREFERENCE if masked else wf.BACKEND_PREFERENCE)


# ------------------------------------------------------------------------------ runs


def finish_row(row, shape_name, grid, seq_len, base_ms):
    """wan_forward's finish_row, the grid recorded as such (not as a latent size)."""
    row = wf.finish_row(row, shape_name, grid, seq_len, base_ms)
    row["grid"] = row.pop("latent")
    return row


def run_shape(model, cfg, shape_name, grid, args, device, dtype):
    inputs, seq_len = make_inputs(cfg, grid, args, dtype, device)
    return wf.run_rows(model, inputs, args, device, lambda row, base_ms: finish_row(row, shape_name, grid, seq_len,
                                                                                   base_ms))


def main(argv=None):
    args = parse_args(argv)
    launcher = [sys.executable]
    if "TORCHELASTIC_RUN_ID" in os.environ:
        launcher = ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", "?")]
    base = {"benchmark": "qwen_forward", "command": " ".join(launcher + sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": args.model, "dtype": args.dtype, "edit": args.edit}
    if args.device == "cuda" and not torch.cuda.is_available():
        print("qwen_forward: CUDA is not available; nothing measured (use --device cpu to check the script)")
        if args.json and int(os.environ.get("RANK", 0)) == 0:
            wf.write_json(args.json, {**base, "versions": wf.versions(), "skipped": "CUDA not available"})
        return 0
    try:
        import diffusers  # noqa: F401

        import ringsp  # noqa: F401
    except ImportError as exc:
        print(f"qwen_forward: needs diffusers and ringsp ({exc})")
        return 1
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    device = wf.init_distributed(args.device)
    try:
        model, cfg = build_transformer(args.model, args.layers, dtype, device, args.seed)
        backend = pick_backend(model, device, dtype, masked=args.text_valid < args.text_len)
        rows = []
        for shape_name, grid in shapes(args):
            rows.extend(run_shape(model, cfg, shape_name, grid, args, device, dtype))
        if dist.get_rank() == 0:
            wf.print_table(rows)
            if args.json:
                wf.write_json(args.json, wf.run_record(base, args, device, cfg, backend, rows, text_len=args.text_len,
                                                       text_valid=args.text_valid))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
