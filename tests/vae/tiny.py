"""Tiny random VAEs of each supported family (same code paths as the published configs:
Wan2.1 z16, Wan2.2-TI2V-5B-style z48 with residual up blocks and 2x2 patchified output,
Qwen-Image), built identically on every rank from a seed."""
import torch

KINDS = ("wan21", "wan22", "qwenimage")
Z_DIM = {"wan21": 16, "wan22": 48, "qwenimage": 16}


def build_vae(kind, seed=0):
    from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan

    torch.manual_seed(seed)
    if kind == "wan21":
        vae = AutoencoderKLWan(base_dim=8, z_dim=16)
    elif kind == "wan22":
        vae = AutoencoderKLWan(
            base_dim=8, decoder_base_dim=12, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
            patch_size=2, scale_factor_spatial=16,
        )
    elif kind == "qwenimage":
        vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16)
    else:
        raise ValueError(kind)
    # Norm gains start at exactly 1; make them random too so a wrongly applied norm shows.
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.mul_(1 + 0.2 * torch.randn_like(p))
    return vae.eval()


def latents(kind, frames, height, width, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, Z_DIM[kind], frames, height, width, generator=g)


def reference_decode(vae, z):
    with torch.no_grad():
        return vae.decode(z).sample
