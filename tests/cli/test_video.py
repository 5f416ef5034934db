"""Video output: frames in [0, 1] become uint8 and an mp4 that reads back."""
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from ringsp.cli.video import to_uint8, write_video


def test_to_uint8_rounds_and_clips():
    frames = torch.tensor([[[[-0.5, 0.0, 0.5019]]], [[[0.999, 1.0, 2.0]]]])
    assert to_uint8(frames).tolist() == [[[[0, 0, 128]]], [[[255, 255, 255]]]]


def test_mp4_round_trip(tmp_path):
    # smooth content (noise does not survive yuv420 + lossy coding)
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    frames = torch.stack([torch.stack([y, x, (x + y + t / 5) % 1], dim=-1) for t in range(5)]) * 0.8 + 0.1
    path = write_video(str(tmp_path / "a" / "b.mp4"), frames, fps=16)
    back = np.stack(imageio.mimread(path))
    assert back.shape == (5, 32, 48, 3)
    # lossy codec: close on average, not bit-exact
    assert np.abs(back.astype(float) - to_uint8(frames).astype(float)).mean() < 6


def test_bad_frames():
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        write_video("/tmp/never.mp4", torch.rand(5, 32, 48), fps=16)


@pytest.mark.parametrize("fps", [16, 24])
def test_the_video_is_written_at_the_given_frame_rate(tmp_path, fps):
    path = write_video(str(tmp_path / "v.mp4"), torch.rand(5, 32, 48, 3), fps=fps)
    assert imageio.get_reader(path).get_meta_data()["fps"] == fps
