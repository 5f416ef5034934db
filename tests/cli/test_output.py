"""The requested output: refused in one line before any model work when it could not be
written (imageio without imageio-ffmpeg, no ffmpeg binary, no pillow); kept losslessly as
.npy beside it, with the report still printed, when writing fails at the end."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from ringsp.cli import launch
from ringsp.cli.args import UsageError, parse_request
from ringsp.cli.main import main
from ringsp.cli.output import save_output, writer_problem
from ringsp.cli.report import check_report
from ringsp.cli.video import to_uint8

from .conftest import SIZE

SIZE_ARGS = ["--height", str(SIZE["height"]), "--width", str(SIZE["width"]), "--num-frames", str(SIZE["num_frames"])]


@pytest.fixture
def no_imageio_ffmpeg(monkeypatch):
    """imageio present, imageio-ffmpeg not (the environment the run was lost in)."""
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import imageio_ffmpeg` raises ImportError


def _frames(n=3, h=16, w=24, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_writers_present_here():
    assert [writer_problem(p) for p in ("a.mp4", "a.webm", "a.gif", "a.png")] == [None] * 4


def test_missing_imageio_ffmpeg_is_named(no_imageio_ffmpeg):
    problem = writer_problem("out/v.mp4")
    assert problem.startswith("writing .mp4 needs imageio and imageio-ffmpeg: ") and "\n" not in problem
    assert problem.endswith("(pip install imageio imageio-ffmpeg, or install ringsp's 'models' extra)")
    assert writer_problem("v.gif") is None and writer_problem("i.png") is None  # pillow writes those


def test_missing_ffmpeg_binary_is_named(monkeypatch):
    import imageio_ffmpeg

    def no_binary():
        raise RuntimeError("No ffmpeg exe could be found.\nInstall ffmpeg on your system.")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_binary)
    assert writer_problem("v.mkv") == ("writing .mkv needs an ffmpeg binary: No ffmpeg exe could be found. "
                                       "Install ffmpeg on your system.")


def test_missing_pillow_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert writer_problem("i.png").startswith("writing .png needs pillow: ")
    assert writer_problem("v.gif").startswith("writing .gif needs imageio and pillow: ")


def test_parse_request_refuses_an_unwritable_output(no_imageio_ffmpeg):
    base = ["--model", "tiny-wan", "--device", "cpu"]
    with pytest.raises(UsageError, match=r"--output 'v\.mp4': writing \.mp4 needs imageio and imageio-ffmpeg"):
        parse_request(base + ["--output", "v.mp4"], env={})
    with pytest.raises(UsageError, match="imageio-ffmpeg"):  # the default output is an .mp4 too
        parse_request(base, env={})
    assert parse_request(base + ["--no-output"], env={}).output is None
    assert parse_request(base + ["--output", "v.gif"], env={}).output == "v.gif"


def test_main_refuses_in_one_line_before_any_work(no_imageio_ffmpeg, monkeypatch, tmp_path, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(launch, "execute", no_work)
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model", "tiny-wan", "--device", "cpu", "--output", str(tmp_path / "v.mp4")])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ringsp generate: error: --output ") and "imageio-ffmpeg" in err
    assert list(tmp_path.iterdir()) == []


def _tiff_writer_failure(monkeypatch):
    """imageio's mimwrite as it failed without imageio-ffmpeg: an 8-byte file, then a TypeError."""
    import imageio.v2 as imageio

    def broken(path, frames, **kwargs):
        with open(path, "wb") as f:
            f.write(b"II*\x00\x08\x00\x00\x00")
        raise TypeError("TiffWriter.write() got an unexpected keyword argument 'fps'")

    monkeypatch.setattr(imageio, "mimwrite", broken)


def test_a_failed_write_keeps_the_frames(monkeypatch, tmp_path):
    _tiff_writer_failure(monkeypatch)
    frames = _frames()
    path = tmp_path / "v.mp4"
    result = save_output(str(path), frames, "video", 16)
    assert result == {"path": str(path), "written": False,
                      "error": "TypeError: TiffWriter.write() got an unexpected keyword argument 'fps'",
                      "frames_path": str(tmp_path / "v.mp4.frames.npy")}
    assert not path.exists()  # the unreadable partial file is gone
    np.testing.assert_array_equal(np.load(result["frames_path"]), to_uint8(frames))  # exactly the pixels


def test_an_older_file_is_left_alone_when_the_writer_fails_before_touching_it(monkeypatch, tmp_path):
    import imageio.v2 as imageio

    def refuses(path, frames, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(imageio, "mimwrite", refuses)
    path = tmp_path / "v.mp4"
    path.write_bytes(b"an earlier video")
    result = save_output(str(path), _frames(), "video", 16)
    assert not result["written"] and result["error"] == "OSError: No space left on device"
    assert path.read_bytes() == b"an earlier video"


def test_frames_go_to_the_temp_folder_when_the_output_folder_takes_nothing(monkeypatch, tmp_path):
    import tempfile

    import ringsp.cli.image as image

    def fails(path, frames):
        raise OSError("read-only file system")

    monkeypatch.setattr(image, "write_image", fails)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    frames = _frames(n=1)
    result = save_output(str(tmp_path / "missing" / "i.png"), frames, "image")  # its folder does not exist
    assert result["frames_path"] == str(tmp_path / "i.png.frames.npy")
    np.testing.assert_array_equal(np.load(result["frames_path"]), to_uint8(frames))


def test_generate_prints_the_report_and_says_where_the_frames_are(tiny_model_dir, monkeypatch, tmp_path, capsys):
    _tiff_writer_failure(monkeypatch)
    video, report_path = tmp_path / "v.mp4", tmp_path / "r.json"
    code = main(["generate", "--model-path", tiny_model_dir, "--device", "cpu", "--steps", "1", *SIZE_ARGS,
                 "--output", str(video), "--json", str(report_path)])
    assert code == 1  # the file asked for is not there
    out = capsys.readouterr().out
    assert "Stage time breakdown" in out and "Peak memory per rank" in out
    npy = tmp_path / "v.mp4.frames.npy"
    assert (f"Video NOT written to {video} (TypeError: TiffWriter.write() got an unexpected keyword argument "
            f"'fps'); the frames are saved losslessly in {npy}") in out
    assert not video.exists()
    assert np.load(npy).shape == (SIZE["num_frames"], SIZE["height"], SIZE["width"], 3)
    report = json.loads(report_path.read_text())
    assert check_report(report) == [] and report["output"]["written"] is False
    assert report["output"]["frames_path"] == str(npy)


def test_the_frames_fallback_follows_no_link_and_keeps_older_files(monkeypatch, tmp_path):
    _tiff_writer_failure(monkeypatch)
    folder, outside = tmp_path / "out", tmp_path / "outside.npy"
    folder.mkdir()
    (folder / "v.mp4.frames.npy").symlink_to(outside)  # a link planted where the fallback writes
    (folder / "w.mp4.frames.npy").write_bytes(b"an earlier run's frames")
    frames = _frames()
    for name in ("v.mp4", "w.mp4"):
        result = save_output(str(folder / name), frames, "video", 16)
        saved = result["frames_path"]
        assert os.path.dirname(saved) == str(folder) and not os.path.islink(saved), saved
        assert os.path.basename(saved).startswith(name + ".frames-") and saved.endswith(".npy")
        np.testing.assert_array_equal(np.load(saved), to_uint8(frames))
    assert not outside.exists() and os.path.islink(folder / "v.mp4.frames.npy")
    assert (folder / "w.mp4.frames.npy").read_bytes() == b"an earlier run's frames"
