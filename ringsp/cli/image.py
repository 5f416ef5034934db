"""Writing a generated image (one frame [1, H, W, 3] in [0, 1]) to a PNG file."""
import os

from .video import to_uint8


def write_image(path, frames):
    """Writes frames [1, H, W, 3] (or [H, W, 3]) in [0, 1] to `path` as PNG (its folder is
    created); returns the path."""
    import PIL.Image

    data = to_uint8(frames)
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3 or data.shape[-1] != 3:
        raise ValueError(f"frames must be one RGB image [1, H, W, 3], got shape {tuple(frames.shape)}")
    if not path.lower().endswith(".png"):
        raise ValueError(f"path must end with .png, got {path!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    PIL.Image.fromarray(data).save(path, format="PNG")
    return path
