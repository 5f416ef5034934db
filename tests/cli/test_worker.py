"""Sequence-parallel generation on 2 and 3 gloo processes equals the single-process result
(fp32), for Ulysses, ring, USP and CFG-parallel layouts, uneven token counts included, for Wan
and for Qwen-Image / Qwen-Image-Edit (text lengths the world does not divide); ranks given
different requests (or different input images) fail together. The process groups are reused
between cases."""
import pytest
import torch

from ringsp.cli.args import parse_request
from ringsp.cli.report import check_report
from ringsp.cli.worker import run_rank
from tests.mp_pool import run_distributed

# fp32 sums reordered across ranks: ~5e-6 seen on the frames; a wrong shard or a dropped
# block moves them by 1e-2 or more.
TOL = 1e-4


def _request(model_dir, size, u=1, r=1, cfg=1):
    argv = ["--model-path", model_dir, "--device", "cpu", "--no-output", "--steps", "3", "--seed", "5",
            "--prompt", "a boat on a lake", "--negative-prompt", "fog", "--max-sequence-length", "24",
            "--ulysses-degree", str(u), "--ring-degree", str(r), "--vae-min-parallel-pixels", "0",
            "--height", str(size[0]), "--width", str(size[1]), "--num-frames", str(size[2])]
    return parse_request(argv + (["--cfg-parallel"] if cfg == 2 else []), env={})


def _run_layouts(model_dir, size, layouts):
    """On every rank: one generation per (u, r, cfg) layout; rank 0 returns its tensors and report."""
    out = []
    for u, r, cfg in layouts:
        outcome = run_rank(_request(model_dir, size, u, r, cfg), distributed=True, quiet=True, keep_tensors=True)
        out.append(None if outcome is None else (outcome.latents, outcome.frames, outcome.report))
    return out


def _single(model_dir, size):
    return run_rank(_request(model_dir, size), distributed=False, quiet=True, keep_tensors=True)


@pytest.mark.parametrize("world, size, layouts", [
    # 48 x 80 x 9: 45 tokens, uneven over 2 ranks; 2 heads over 2 Ulysses ranks
    (2, (48, 80, 9), [(2, 1, 1), (1, 2, 1), (1, 1, 2)]),
    # 64 x 80 x 5: 40 tokens, uneven over 3 ranks; 2 heads padded to 3 by Ulysses
    (3, (64, 80, 5), [(3, 1, 1), (1, 3, 1)]),
])
def test_sp_equals_single_process(tiny_model_dir, world, size, layouts):
    ref = _single(tiny_model_dir, size)
    assert ref.frames.std() > 0.01
    results = run_distributed(world, _run_layouts, tiny_model_dir, size, layouts, timeout=300)
    assert all(x is None for rank in results[1:] for x in rank)  # only rank 0 returns
    for (u, r, cfg), (latents, video, report) in zip(layouts, results[0]):
        where = f"u{u}r{r}c{cfg} on {world} ranks"
        assert video.shape == ref.frames.shape, where
        assert (latents - ref.latents).abs().max().item() <= TOL, where
        assert (video - ref.frames).abs().max().item() <= TOL, where
        assert check_report(report) == [], where
        assert len(report["memory"]["per_rank"]) == world
        assert report["parallel"] == {"num_gpus": world, "ulysses_degree": u, "ring_degree": r, "cfg_degree": cfg,
                                      "parallel_vae": True, "sequence_parallel_transformer": u * r > 1,
                                      "backend": "gloo", "launcher": "spawn"}


def _disagree(model_dir):
    import torch.distributed as dist

    req = _request(model_dir, (48, 80, 9), 2, 1, 1)
    if dist.get_rank() == 1:
        req = type(req)(**{**req.__dict__, "seed": 6})
    try:
        run_rank(req, distributed=True, quiet=True)
    except ValueError as exc:
        return str(exc)
    return None


def test_ranks_with_different_requests_fail_together(tiny_model_dir):
    messages = run_distributed(2, _disagree, tiny_model_dir, timeout=120)
    for msg in messages:
        assert msg is not None and "different arguments" in msg and "seed" in msg, messages


# ------------------------------------------------------------------------------ Qwen-Image


def _qwen_request(model_dir, image, u=1, r=1, cfg=1, size=(48, 80)):
    argv = ["--model-path", model_dir, "--device", "cpu", "--no-output", "--steps", "3", "--seed", "5",
            "--ulysses-degree", str(u), "--ring-degree", str(r), "--vae-min-parallel-pixels", "0",
            "--height", str(size[0]), "--width", str(size[1])]
    if image is None:
        argv += ["--prompt", "a boat on a lake", "--negative-prompt", ""]
    else:
        argv += ["--prompt", "add a hat", "--negative-prompt", "", "--image", image, "--image-area", "2304"]
    return parse_request(argv + (["--cfg-parallel"] if cfg == 2 else []), env={})


def _run_qwen_layouts(cases):
    """On every rank: one generation per (model dir, image, size, (u, r, cfg)); rank 0 returns its results."""
    out = []
    for model_dir, image, size, (u, r, cfg) in cases:
        outcome = run_rank(_qwen_request(model_dir, image, u, r, cfg, size), distributed=True, quiet=True,
                           keep_tensors=True)
        out.append(None if outcome is None else (outcome.latents, outcome.frames, outcome.report))
    return out


def _text_lengths(request):
    """Token counts of the prompt's and the negative prompt's embeddings (what joint attention sees)."""
    from ringsp.cli.qwen_loop import QwenRun
    from ringsp.cli.worker import load_pipeline_for

    pipe, _ = load_pipeline_for(request, "cpu")
    run = QwenRun(pipe, request.params(), "cpu")
    run.validate()
    return [run.encode(p)[0].shape[1] for p in (request.prompt, request.negative_prompt)]


@pytest.mark.parametrize("world, layouts", [
    (2, [(2, 1, 1), (1, 2, 1), (1, 1, 2)]),  # 15 target tokens (+ 8 reference tokens for Edit): uneven on 2
    (3, [(3, 1, 1), (1, 3, 1)]),             # 2 heads padded to 3 by Ulysses
])
def test_qwen_sp_equals_single_process(qwen_model_dir, qwen_edit_model_dir, input_image, world, layouts):
    cases, refs = [], []
    for model_dir, image in ((qwen_model_dir, None), (qwen_edit_model_dir, input_image)):
        single = _qwen_request(model_dir, image)
        assert all(n % world for n in _text_lengths(single))  # text the world does not divide
        ref = run_rank(single, distributed=False, quiet=True, keep_tensors=True)
        assert ref.frames.std() > 0.01 and torch.isfinite(ref.latents).all()
        for layout in layouts:
            cases.append((model_dir, image, (48, 80), layout))
            refs.append(ref)
    results = run_distributed(world, _run_qwen_layouts, cases, timeout=300)
    assert all(x is None for rank in results[1:] for x in rank)
    for (model_dir, image, _, (u, r, cfg)), ref, (latents, frames, report) in zip(cases, refs, results[0]):
        where = f"{'edit' if image else 'text-to-image'} u{u}r{r}c{cfg} on {world} ranks"
        assert frames.shape == ref.frames.shape == (1, 48, 80, 3), where
        assert (latents - ref.latents).abs().max().item() <= TOL, where
        assert (frames - ref.frames).abs().max().item() <= TOL, where
        assert check_report(report) == [], where
        assert report["parallel"]["sequence_parallel_transformer"] == (u * r > 1), where
        assert report["request"]["media"] == "image" and report["request"]["image"] == image, where


def _different_images(model_dir, images):
    import torch.distributed as dist

    req = _qwen_request(model_dir, images[dist.get_rank()], 2, 1, 1)
    try:
        run_rank(req, distributed=True, quiet=True)
    except ValueError as exc:
        return str(exc)
    return None


def test_ranks_with_different_input_images_fail_together(qwen_edit_model_dir, input_image, tmp_path):
    from .conftest import write_test_image

    other = write_test_image(tmp_path / "other.png", seed=3)
    messages = run_distributed(2, _different_images, qwen_edit_model_dir, [input_image, other], timeout=120)
    for msg in messages:
        assert msg is not None and "different arguments" in msg and "image_digest" in msg, messages


# ------------------------------------------------------------------------------ Engine


def _engine_runs(model_dir):
    """One engine, two different requests, then a fresh run_rank of the second one."""
    import dataclasses

    from ringsp.cli.worker import Engine

    first = _request(model_dir, (48, 80, 9), 1, 2, 1)
    second = dataclasses.replace(_request(model_dir, (64, 80, 5), 1, 2, 1), seed=9, prompt="a red kite")
    engine = Engine(first, distributed=True)
    outcomes = [engine.run(r, write_output=False, progress=False, keep_tensors=True) for r in (first, second)]
    try:
        engine.run(dataclasses.replace(second, ulysses_degree=2, ring_degree=1))
        refused = None
    except ValueError as exc:
        refused = str(exc)
    fresh = run_rank(second, distributed=True, quiet=True, keep_tensors=True)
    if outcomes[0] is None:
        return None
    return [(o.latents, o.frames, o.report) for o in outcomes + [fresh]], refused


def test_one_engine_runs_many_requests_as_fresh_runs_do(tiny_model_dir):
    results = run_distributed(2, _engine_runs, tiny_model_dir, timeout=300)
    assert results[1] is None
    (first, second, fresh), refused = results[0]
    assert first[1].shape == (9, 48, 80, 3) and second[1].shape == (5, 64, 80, 3)
    assert torch.equal(second[0], fresh[0]) and torch.equal(second[1], fresh[1])  # no state left by the first
    assert second[2]["request"]["seed"] == 9 and check_report(second[2]) == []
    assert second[2]["load_s"] == first[2]["load_s"]  # loaded once
    assert "ulysses_degree, ring_degree" in refused and "fixed when the engine is built" in refused
