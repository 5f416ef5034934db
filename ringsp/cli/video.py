"""Writing the generated frames to a video file (mp4 and others through imageio-ffmpeg).
The frame rate is the request's (--fps, else the model's default: ModelDefaults.fps)."""
import os

import numpy as np


def to_uint8(frames):
    """[F, H, W, 3] floats in [0, 1] (tensor or array) -> uint8 array, rounded."""
    arr = frames.numpy() if hasattr(frames, "numpy") else np.asarray(frames)
    arr = np.nan_to_num(arr, nan=0.0)  # NaN is reported (ringsp.cli.nonfinite) and written black
    return (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def write_video(path, frames, fps):
    """Writes [F, H, W, 3] frames in [0, 1] to `path` at `fps` frames per second (its folder
    is created); returns the path."""
    import imageio.v2 as imageio

    data = to_uint8(frames)
    if data.ndim != 4 or data.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got shape {tuple(data.shape)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if path.lower().endswith(".gif"):
        imageio.mimwrite(path, list(data), duration=1.0 / fps)
    else:
        # FFMPEG named: without imageio-ffmpeg, imageio would pick another plugin by suffix (a
        # TIFF writer was seen) and fail only after creating an unreadable file.
        # Sizes of Wan outputs are multiples of 16, so ffmpeg needs no resizing (block size 1).
        imageio.mimwrite(path, list(data), format="FFMPEG", fps=fps, macro_block_size=1)
    return path
