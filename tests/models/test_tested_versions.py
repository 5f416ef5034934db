"""The model layer's gate on diffusers / transformers releases: untested ones are refused in
one line naming the package, the version and the range; tested ones pass; the override warns."""
import os
import subprocess
import sys
import warnings

import pytest

from ringsp.models import tested_versions as tv

# the checkout (or site-packages) that holds ringsp/
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(tv.__file__))))
IN_RANGE = {"diffusers": "0.42.1", "transformers": "5.25.0"}


def _installed(monkeypatch, **versions):
    found = {**IN_RANGE, **versions}
    monkeypatch.setattr(tv, "installed_version", lambda package: found.get(package))


@pytest.mark.parametrize("package,version", [("diffusers", "0.43.0"), ("diffusers", "0.41.2"),
                                             ("transformers", "5.26.0"), ("transformers", "4.57.1")])
def test_an_untested_release_is_refused_in_one_line(monkeypatch, package, version):
    _installed(monkeypatch, **{package: version})
    with pytest.raises(tv.UntestedVersionError) as exc:
        tv.check_tested_versions(env={})
    message = str(exc.value)
    low, high = tv.TESTED[package]
    assert "\n" not in message
    assert f"{package} {version}" in message and f"{package}>={low},<{high}" in message
    assert tv.OVERRIDE_ENV in message


def test_tested_releases_pass_silently(monkeypatch):
    _installed(monkeypatch, diffusers="0.42.9", transformers="5.17.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tv.check_tested_versions(env={})


def test_a_missing_package_is_not_checked(monkeypatch):
    _installed(monkeypatch, diffusers=None, transformers=None)
    tv.check_tested_versions(env={})


def test_the_override_warns_instead(monkeypatch):
    _installed(monkeypatch, diffusers="0.50.0")
    with pytest.warns(RuntimeWarning, match="diffusers 0.50.0 is not a tested release"):
        tv.check_tested_versions(env={tv.OVERRIDE_ENV: "1"})
    with pytest.raises(ValueError, match=tv.OVERRIDE_ENV):  # any other value is a bad setting
        tv.check_tested_versions(env={tv.OVERRIDE_ENV: "yes"})


@pytest.mark.parametrize("version,ok", [
    ("0.42.0", False), ("0.42.1", True), ("0.42.1rc1", False), ("0.42.1+cpu", True), ("0.42.1.post1", True),
    ("0.42.10", True), ("0.43.0.dev0", False), ("0.43.0", False), ("1.0", False), ("0.42", False),
    ("not-a-version", False),
])
def test_range_edges(version, ok):
    assert (tv.untested("diffusers", version) is None) == ok


def test_pyproject_declares_the_same_ranges():
    tomllib = pytest.importorskip("tomllib")
    path = os.path.join(ROOT, "pyproject.toml")
    if not os.path.exists(path):
        pytest.skip("not a source checkout")
    with open(path, "rb") as f:
        models = tomllib.load(f)["project"]["optional-dependencies"]["models"]
    for package, (low, high) in tv.TESTED.items():
        assert f"{package}>={low},<{high}" in models


def test_importing_ringsp_with_an_untested_diffusers(tmp_path):
    """End to end: a diffusers 0.99.0 found first on the path (its metadata only) stops `import ringsp`."""
    info = tmp_path / "diffusers-0.99.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: diffusers\nVersion: 0.99.0\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    env.pop(tv.OVERRIDE_ENV, None)
    cmd = [sys.executable, "-c", "import ringsp; print('imported')"]
    refused = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("ringsp.models.tested_versions.UntestedVersionError: ringsp.models: diffusers 0.99.0 ")
    assert "diffusers>=0.42.1,<0.43" in last
    allowed = subprocess.run(cmd, env={**env, tv.OVERRIDE_ENV: "1"}, cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert allowed.returncode == 0 and allowed.stdout.strip() == "imported"
    assert "diffusers 0.99.0 is not a tested release" in allowed.stderr
