"""NaN / Inf in a generation's result: found after denoising (the latents) and after decoding
(the frames), named by the stage that produced it, so that a run never writes a black video
without a word (`ringsp generate` exits 1 and still writes its report).

    problems = find_nonfinite(latents, frames)   # [] when both are finite
"""
import torch

# The stage that produced each tensor (ringsp.cli.timing.STAGES' names).
STAGE_OF = {"latents": "Denoising", "frames": "Decoding"}


def find_nonfinite(latents, frames=None):
    """[{stage, tensor, nan, inf, values}] for each of latents / frames (None: not here) that
    holds NaN or Inf, in stage order: the first entry is where it began."""
    problems = []
    for name, t in (("latents", latents), ("frames", frames)):
        if t is None:
            continue
        nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        if nan or inf:
            problems.append({"stage": STAGE_OF[name], "tensor": name, "nan": nan, "inf": inf, "values": t.numel()})
    return problems


def describe_nonfinite(problems):
    """One line naming where the non-finite values began, or None when there are none."""
    if not problems:
        return None
    first = problems[0]
    line = (f"the {first['stage']} stage produced non-finite {first['tensor']}: {first['nan']} NaN and "
            f"{first['inf']} Inf among {first['values']} values")
    if len(problems) > 1:
        line += "; " + ", ".join(f"{p['tensor']} after {p['stage']}: {p['nan']} NaN, {p['inf']} Inf"
                                 for p in problems[1:])
    return line + " (the output holds no usable picture)"
