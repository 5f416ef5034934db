"""FLUX.1 and LTX-Video transformer forwards: ringsp vs diffusers with its default attention backend.

    python -m ringsp_bench.dit_forward --model flux.1-dev --json flux_forward_w1.json   # 1024 x 1024
    python -m ringsp_bench.dit_forward --model ltx-video --json ltx_forward_w1.json     # 768 x 512, 97 frames
    torchrun --nproc_per_node 2 -m ringsp_bench.dit_forward --model flux.1-dev ...       # SP over 2 GPUs

The published config with random weights (bf16), B = 1, inputs as the pipelines make them
(FLUX.1: 512 T5 tokens, pooled CLIP, position ids, guidance 3.5; LTX-Video: 128 T5 tokens of
which --text-valid are valid, the latent grid and its rotary scale at 25 fps). The rows are
wan_forward's (whose helpers this uses): diffusers-1gpu (its forward on rank 0 alone: the
baseline), ringsp for every (u, r) with u * r = W (at W = 1 ringsp's attention kernels with no
communication) and diffusers-cp (its context parallel, W > 1). Unlike wan_forward no attention
backend is set: diffusers runs its default (torch SDPA). Timing, table, JSON, --compile and
--cuda-graphs as in wan_forward.

Without CUDA it prints why and exits 0 (writing a JSON that says so). `--device cpu` with a
tiny model (`--model tiny-flux --size 48,80` or `--model tiny-ltx-video --size 96,160,17`)
runs the whole script on gloo, which checks the script, not the speed.
"""
import argparse
import datetime
import os
import sys

import torch
import torch.distributed as dist

from . import wan_forward as wf  # the shared timing, runs and report helpers

# family -> (diffusers class, default --size, default --text-len)
FAMILIES = {"flux": ("FluxTransformer2DModel", (1024, 1024), 512),
            "ltx": ("LTXVideoTransformer3DModel", (512, 768, 97), 128)}
LTX_FRAME_RATE = 25


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="flux.1-dev", help="a FLUX.1 or LTX-Video config name of ringsp.models.configs")
    p.add_argument("--size", default=None, help="H,W pixels (FLUX.1) or H,W,FRAMES (LTX-Video); default: "
                   "1024,1024 / 512,768,97")
    p.add_argument("--text-len", type=int, default=None, help="text tokens (default 512 / 128)")
    p.add_argument("--text-valid", type=int, default=None, help="LTX-Video: valid text tokens (default: all)")
    wf.add_run_args(p)
    args = p.parse_args(argv)
    args.family = family_of(args.model)
    args.text_len = FAMILIES[args.family][2] if args.text_len is None else args.text_len
    return wf.check_run_args(p, args)


def family_of(name):
    from ringsp.models import configs

    if name in configs.FLUX_TRANSFORMERS:
        return "flux"
    if name in configs.LTX_TRANSFORMERS:
        return "ltx"
    raise SystemExit(f"--model {name!r} is not a FLUX.1 or LTX-Video config; known: "
                     f"{sorted(configs.FLUX_TRANSFORMERS) + sorted(configs.LTX_TRANSFORMERS)}")


def pixel_size(args, family):
    size = FAMILIES[family][1] if args.size is None else tuple(int(x) for x in args.size.split(","))
    if len(size) != len(FAMILIES[family][1]):
        raise SystemExit(f"--size {args.size!r}: {family} takes {'H,W' if family == 'flux' else 'H,W,FRAMES'}")
    return size


# ------------------------------------------------------------------------------ set-up


def build_transformer(name, family, layers, dtype, device, seed):
    """The config with random weights, equal on all ranks."""
    import diffusers

    from ringsp.models import configs

    cfg = configs.transformer_config(name)
    if layers is not None:
        cfg["num_layers"] = layers
        if family == "flux":
            cfg["num_single_layers"] = 2 * layers  # FLUX.1's proportion: 19 + 38
    return wf.build_model(getattr(diffusers, FAMILIES[family][0]), cfg, dtype, device, seed), cfg


def make_inputs(family, cfg, size, text_len, text_valid, dtype, device, seed):
    """(forward kwargs, image tokens S) as FluxPipeline / LTXPipeline make them."""
    gen = torch.Generator("cpu").manual_seed(seed + 1)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(device, dtype)  # noqa: E731
    if family == "flux":
        from diffusers import FluxPipeline

        grid = (size[0] // 16, size[1] // 16)  # VAE stride 8, packed 2 x 2
        seq_len = grid[0] * grid[1]
        return {"hidden_states": rand(1, seq_len, cfg["in_channels"]),
                "encoder_hidden_states": rand(1, text_len, cfg["joint_attention_dim"]),
                "pooled_projections": rand(1, cfg["pooled_projection_dim"]),
                "timestep": torch.full((1,), 0.5, device=device, dtype=dtype),
                "img_ids": FluxPipeline._prepare_latent_image_ids(1, *grid, device, dtype),
                "txt_ids": torch.zeros(text_len, 3, device=device, dtype=dtype),
                "guidance": torch.full((1,), 3.5, device=device, dtype=torch.float32) if cfg["guidance_embeds"]
                else None, "joint_attention_kwargs": {}, "return_dict": False}, seq_len
    height, width, frames = size
    grid = ((frames - 1) // 8 + 1, height // 32, width // 32)  # VAE: 8x temporal, 32x spatial, patch 1
    seq_len = grid[0] * grid[1] * grid[2]
    mask = (torch.arange(text_len) < (text_len if text_valid is None else text_valid))[None].to(device)
    return {"hidden_states": rand(1, seq_len, cfg["in_channels"]), "encoder_hidden_states":
            rand(1, text_len, cfg["caption_channels"]), "timestep": torch.full((1,), 500.0, device=device),
            "encoder_attention_mask": mask, "num_frames": grid[0], "height": grid[1], "width": grid[2],
            "rope_interpolation_scale": (8 / LTX_FRAME_RATE, 32, 32), "return_dict": False}, seq_len


def main(argv=None):
    args = parse_args(argv)
    size = pixel_size(args, args.family)
    launcher = ["torchrun", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", "?"), "-m"] \
        if "TORCHELASTIC_RUN_ID" in os.environ else [os.path.basename(sys.executable), "-m"]
    base = {"benchmark": "dit_forward", "command": " ".join(launcher + ["ringsp_bench.dit_forward"] + sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": args.model, "dtype": args.dtype, "size": list(size), "text_len": args.text_len,
            "text_valid": args.text_valid}
    if args.device == "cuda" and not torch.cuda.is_available():
        print("dit_forward: CUDA is not available; nothing measured (use --device cpu to check the script)")
        if args.json and int(os.environ.get("RANK", 0)) == 0:
            wf.write_json(args.json, {**base, "versions": wf.versions(), "skipped": "CUDA not available"})
        return 0
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    device = wf.init_distributed(args.device)
    try:
        model, cfg = build_transformer(args.model, args.family, args.layers, dtype, device, args.seed)
        inputs, seq_len = make_inputs(args.family, cfg, size, args.text_len, args.text_valid, dtype, device, args.seed)
        shape = "x".join(map(str, size))
        rows = wf.run_rows(model, inputs, args, device,
                           lambda row, base_ms: wf.finish_row(row, shape, size, seq_len, base_ms))
        if dist.get_rank() == 0:
            wf.print_table(rows)
            if args.json:
                wf.write_json(args.json, wf.run_record(base, args, device, cfg, "diffusers' default (none set)", rows,
                                                       seq_len=seq_len))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
