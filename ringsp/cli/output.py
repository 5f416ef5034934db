"""The requested output file of `ringsp generate`: checked before any work, written at the
end, and never lost.

A generation can take hours; a missing writer found only when it is done would throw the
result away. So `writer_problem` is asked while the arguments are checked (the run is
refused in one line before any model work), and `save_output` keeps the frames losslessly
as a .npy file beside the requested path when writing still fails (disk full, a codec
error), so the stage report is printed and the pixels can be encoded later.

Nothing already on disk is lost either: `output_path` refuses an --output that exists
(unless --overwrite) or is a symbolic link, and moves a default path that exists to the next
free numbered name; the .npy fallback only creates new files (never through a symbolic link,
never over an older file).
"""
import os
import tempfile

import numpy as np

from .video import to_uint8

# What each suffix is written with (ringsp.cli.video / ringsp.cli.image) and how to get it.
_PILLOW = ("PIL",), "pillow", "pip install pillow"
_GIF = ("imageio", "PIL"), "imageio and pillow", "pip install imageio pillow"
_FFMPEG = (("imageio", "imageio_ffmpeg"), "imageio and imageio-ffmpeg",
           "pip install imageio imageio-ffmpeg, or install ringsp's 'models' extra")


def writer_problem(path):
    """None if a writer for `path`'s suffix is importable (and, for ffmpeg formats, finds its
    ffmpeg binary); otherwise one line saying what is missing and how to install it."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".png":
        return _missing(suffix, *_PILLOW)
    if suffix == ".gif":
        return _missing(suffix, *_GIF)
    problem = _missing(suffix, *_FFMPEG)
    if problem is None:
        import imageio_ffmpeg

        try:
            imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError as exc:  # no bundled binary and none on PATH
            problem = f"writing {suffix} needs an ffmpeg binary: {_one_line(exc)}"
    return problem


def output_path(path, given, overwrite):
    """The file to write for `path`: itself, or, for a default path (not `given`) that
    exists, the first free `<stem>-2<suffix>`, `-3`, ... beside it. Raises ValueError (one
    line) for a given path that is a symbolic link, or exists and overwrite is False."""
    if path is None:
        return None
    if os.path.islink(path):
        raise ValueError("is a symbolic link; give the path of the file itself")
    if not os.path.lexists(path):
        return path
    if given:
        if overwrite:
            return path
        raise ValueError("exists; pass --overwrite to replace it, or choose another path")
    stem, suffix = os.path.splitext(path)
    n = 2
    while os.path.lexists(f"{stem}-{n}{suffix}"):
        n += 1
    return f"{stem}-{n}{suffix}"


def _missing(suffix, modules, names, install):
    for module in modules:
        try:
            __import__(module)
        except ImportError as exc:
            return f"writing {suffix} needs {names}: {_one_line(exc)} ({install})"
    return None


def _one_line(exc):
    return " ".join(str(exc).split())


def save_output(path, frames, media, fps=None):
    """Writes frames [F, H, W, 3] in [0, 1] to `path` (a video at `fps` frames per second,
    or a PNG when media is "image"). Returns what happened, for the report: {"path", "written", "error",
    "frames_path"}; on failure the partial file is removed and the frames are saved as
    uint8 .npy (exactly the pixels the writer was given) beside `path`, or in the temp
    folder when that fails too (then frames_path says where; None if nowhere)."""
    from .image import write_image
    from .video import write_video

    before = _stamp(path)
    try:
        if media == "image":
            write_image(path, frames)
        else:
            write_video(path, frames, fps)
        return {"path": path, "written": True, "error": None, "frames_path": None}
    except Exception as exc:  # noqa: BLE001 - any writer failure: keep the frames instead
        error = f"{type(exc).__name__}: {_one_line(exc)}"
    if _stamp(path) not in (None, before):  # a file the failed writer started (an 8-byte .mp4)
        _remove_partial(path)
    return {"path": path, "written": False, "error": error, "frames_path": save_frames(path, frames)}


def save_frames(path, frames):
    """Saves frames as uint8 [F, H, W, 3] `<path>.frames.npy` (or, where that name is taken,
    a new `<path>.frames-XXXX.npy`), beside `path` or else in the temp folder; returns the
    file written, or None if neither place took it. Only files it creates are written: a
    symbolic link or an older file of that name is left alone."""
    data = to_uint8(frames)
    name = os.path.basename(path) + ".frames"
    for folder in (os.path.dirname(os.path.abspath(path)), tempfile.gettempdir()):
        try:
            target, f = _new_file(folder, name)
        except OSError:
            continue
        try:
            with f:
                np.save(f, data)
            return target
        except OSError:
            _remove_partial(target)
    return None


def _new_file(folder, name):
    """(path, binary file) of a file created here in `folder`: `name`.npy, else a unique name."""
    target = os.path.join(folder, name + ".npy")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:  # an older file or a link of that name: a new one beside it
        fd, target = tempfile.mkstemp(prefix=name + "-", suffix=".npy", dir=folder)
    return target, os.fdopen(fd, "wb")


def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _remove_partial(path):
    try:
        os.remove(path)
    except OSError:
        pass


def describe(output, media):
    """The line telling the user where the result is."""
    what = "Image" if media == "image" else "Video"
    if output["written"]:
        return f"{what} written to {output['path']}"
    where = (f"the frames are saved losslessly in {output['frames_path']} (uint8 [frames, height, width, 3], "
             "numpy.load)" if output["frames_path"] else "the frames could not be saved anywhere either")
    return f"{what} NOT written to {output['path']} ({output['error']}); {where}"
