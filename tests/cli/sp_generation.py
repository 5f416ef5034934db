"""Shared by the Flux and LTX loop tests (the worker side runs in the tests.mp_pool workers):
one `ringsp generate` request per parallel layout, compared with the single-process run."""
from ringsp.cli.args import parse_request
from ringsp.cli.report import check_report
from ringsp.cli.worker import run_rank

TOL = 1e-4  # as tests/cli/test_worker.py: fp32 sums reordered across ranks


def request(argv, u=1, r=1, cfg=1):
    layout = ["--ulysses-degree", str(u), "--ring-degree", str(r), "--vae-min-parallel-pixels", "0"]
    return parse_request(argv + layout + (["--cfg-parallel"] if cfg == 2 else []), env={})


def run_layouts(argv, layouts):
    """On every rank: one generation per (u, r, cfg); rank 0 returns (latents, frames, report) of each."""
    out = []
    for layout in layouts:
        outcome = run_rank(request(argv, *layout), distributed=True, quiet=True, keep_tensors=True)
        out.append(None if outcome is None else (outcome.latents, outcome.frames, outcome.report))
    return out


def single(argv):
    return run_rank(request(argv), distributed=False, quiet=True, keep_tensors=True)


def check_sp_generate(argv, world, layouts, frames_shape, media):
    """The generation of argv on `world` gloo ranks in each layout equals the single-process one."""
    from tests.mp_pool import run_distributed

    ref = single(argv)
    assert ref.frames.shape == frames_shape and ref.frames.std() > 0.01
    assert_equal_to_single(run_distributed(world, run_layouts, argv, layouts, timeout=300), ref, layouts, world, media)


def assert_equal_to_single(results, ref, layouts, world, media):
    assert all(x is None for rank in results[1:] for x in rank)  # only rank 0 returns
    for (u, r, cfg), (latents, frames, report) in zip(layouts, results[0]):
        where = f"u{u}r{r}c{cfg} on {world} ranks"
        assert frames.shape == ref.frames.shape, where
        assert (latents - ref.latents).abs().max().item() <= TOL, where
        assert (frames - ref.frames).abs().max().item() <= TOL, where
        assert check_report(report) == [], where
        assert report["parallel"]["sequence_parallel_transformer"] == (u * r > 1), where
        assert report["request"]["media"] == media, where
        # no parallel decode for these VAEs: the report says rank 0 decoded alone
        assert any("rank 0 decoded alone" in n for n in report["model"]["notes"]), where
