"""Image output: one frame in [0, 1] becomes an exact 8-bit RGB PNG."""
import numpy as np
import PIL.Image
import pytest
import torch

from ringsp.cli.image import write_image
from ringsp.cli.video import to_uint8


def test_png_round_trip_is_exact(tmp_path):
    frames = torch.rand(1, 24, 40, 3, generator=torch.Generator().manual_seed(0))
    path = write_image(str(tmp_path / "a" / "b.png"), frames)
    back = np.asarray(PIL.Image.open(path))
    assert back.shape == (24, 40, 3)
    np.testing.assert_array_equal(back, to_uint8(frames)[0])  # lossless


@pytest.mark.parametrize("frames, path, message", [
    (torch.rand(2, 8, 8, 3), "x.png", "one RGB image"),
    (torch.rand(1, 8, 8), "x.png", "one RGB image"),
    (torch.rand(1, 8, 8, 3), "x.jpg", ".png"),
])
def test_bad_input(tmp_path, frames, path, message):
    with pytest.raises(ValueError, match=message):
        write_image(str(tmp_path / path), frames)
