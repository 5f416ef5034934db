"""ringsp_kernels.settings: every RINGSP_* switch in one object, read once, checked, listed in
the README; and the one registry of module caches."""
import ast
import os
import re

import pytest

import ringsp_kernels as rk
from ringsp_kernels import caches, settings

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)


def test_defaults_and_every_variable_parsed():
    s = settings.read({})
    assert s == settings.Settings(cache_dir=os.path.join(os.path.expanduser("~"), ".cache", "ringsp"))
    env = {"RINGSP_CUDA_ATTN": "cudnn", "RINGSP_FA4": "0", "RINGSP_FAST_LAUNCH": "0", "RINGSP_CHECK_EVERY_CALL": "1",
           "RINGSP_COMPILE_BACKEND": "aot_eager", "RINGSP_NPU_ATTN": "fused_infer", "RINGSP_CPU_NO_AVX512": "0",
           "RINGSP_CACHE_DIR": "/c", "RINGSP_ASCEND_LIB": "/lib.so", "RINGSP_ALLOW_UNTESTED_VERSIONS": "1"}
    s = settings.read(env)
    assert (s.cuda_attn, s.fa4, s.fast_launch, s.check_every_call, s.compile_backend, s.npu_attn, s.cpu_avx512,
            s.cache_dir, s.ascend_lib, s.allow_untested) == ("cudnn", False, False, True, "aot_eager", "fused_infer",
                                                             False, "/c", "/lib.so", True)
    assert settings.environment(s) == {**env, "RINGSP_CPU_NO_AVX512": "set"}  # the C++ side tests presence
    assert settings.read({"XDG_CACHE_HOME": "/x"}).cache_dir == os.path.join("/x", "ringsp")


@pytest.mark.parametrize("name,bad", [("RINGSP_CUDA_ATTN", "flash"), ("RINGSP_FA4", "yes"),
                                      ("RINGSP_FAST_LAUNCH", ""), ("RINGSP_CHECK_EVERY_CALL", "true"),
                                      ("RINGSP_NPU_ATTN", "fia")])
def test_a_bad_value_names_the_variable(name, bad):
    with pytest.raises(ValueError, match=f"{name} must be one of .*got {bad!r}"):
        settings.read({name: bad})


def test_read_once_until_the_caches_are_cleared(ringsp_env):
    ringsp_env.set("RINGSP_CHECK_EVERY_CALL", "1")
    assert rk.settings.current().check_every_call
    os.environ["RINGSP_CHECK_EVERY_CALL"] = "0"  # monkeypatch restores it after the test
    assert rk.settings.current().check_every_call  # read once
    rk.clear_caches()
    assert not rk.settings.current().check_every_call


def test_override_is_validated_and_restorable():
    before = settings.override(cuda_attn="triton")
    try:
        assert settings.current().cuda_attn == "triton" and settings.agreed()["RINGSP_CUDA_ATTN"] == "triton"
        with pytest.raises(ValueError, match="RINGSP_CUDA_ATTN must be one of"):
            settings.override(cuda_attn="flash")
        with pytest.raises(TypeError, match="no field"):
            settings.override(speed=1)
    finally:
        settings.restore(before)
    assert settings.current() == before


def test_folders_are_not_agreed_but_every_switch_is():
    agreed = settings.agreed(settings.read({}))
    assert "RINGSP_CACHE_DIR" not in agreed and "RINGSP_ASCEND_LIB" not in agreed
    assert set(agreed) == {v.name for v in settings.VARIABLES if v.agreed}
    assert {"RINGSP_CUDA_ATTN", "RINGSP_FA4", "RINGSP_FAST_LAUNCH", "RINGSP_CHECK_EVERY_CALL"} <= set(agreed)
    assert set(rk.agreed_fields()) >= set(agreed)


def _sources(*folders, ext=".py"):
    for folder in folders:
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(ext):
                    path = os.path.join(base, name)
                    with open(path) as f:
                        yield os.path.relpath(path, ROOT), f.read()


def test_the_library_reads_ringsp_variables_through_the_settings_only():
    """No module but settings.py reads the environment for a RINGSP_* switch, and every
    RINGSP_* name the library (Python or C++) mentions is a settings variable."""
    known = set(settings.BY_NAME)
    for path, text in _sources("ringsp", "ringsp_kernels"):
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and path != os.path.join(
                    "ringsp_kernels", "settings.py"):
                line = text.splitlines()[node.lineno - 1]
                assert "RINGSP_" not in line, f"{path}:{node.lineno} reads a RINGSP_ variable itself: {line}"
        for name in re.findall(r"\bRINGSP_[A-Z0-9_]+\b", text):
            assert name in known, f"{path} names {name}, which ringsp_kernels.settings does not know"
    for path, text in _sources("csrc", ext=".cpp"):
        for name in re.findall(r'getenv\("(RINGSP_[A-Z0-9_]+)"\)', text):
            assert name in known, f"{path} reads {name}, which ringsp_kernels.settings does not know"


def test_the_readme_table_lists_every_setting():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    rows = {m[0]: m for m in re.findall(r"^\| `(RINGSP_[A-Z0-9_]+)` \| (.*?) \| (.*?) \|", readme, re.M)}
    assert set(rows) == set(settings.BY_NAME), set(rows) ^ set(settings.BY_NAME)
    for name, (_, values, default) in rows.items():
        var = settings.BY_NAME[name]
        assert default.strip("`") == var.default, (name, default)
        for value in var.values or ():
            assert f"`{value}`" in values, (name, value)


def test_clear_caches_empties_every_registered_cache():
    seen = {}
    box = {"x": 1}
    caches.register("test box", box.clear)
    try:
        rk.clear_caches()
        seen["box"] = dict(box)
    finally:
        caches.unregister("test box")
    assert seen["box"] == {} and {"settings", "dispatch", "cuda plans"} <= set(caches.names())
    with pytest.raises(ValueError, match="already registered"):
        caches.register("settings", lambda: None)
