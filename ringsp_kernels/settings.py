"""Every RINGSP_* environment switch of ringsp, read once per process into one object.

    import ringsp_kernels as rk
    s = rk.settings.current()  # a frozen Settings; s.cuda_attn, s.fa4, s.check_every_call, ...
    rk.settings.environment()  # {variable: its value as text}, for messages
    rk.settings.agreed()       # the switches every rank of a process group must share

`init_parallel` compares `agreed()` across ranks: a switch that changes numerics or control
flow (a kernel path, whether the agreement exchanges on every call) must be equal on every
rank, or the ranks compute different replicated results, or enter different collectives.
Folders (the cache, a built library) are per machine and are not compared.

A value outside a variable's choices raises ValueError naming the variable at the first read.
`override()` changes switches for the rest of the process (RINGSP_CUDA_ATTN through
ringsp_kernels.cuda.ops.set_forced); `clear_caches()` also forgets the read, so the next read sees
the environment as it is then (for tests).
"""
import os
from dataclasses import dataclass, replace

from . import caches


@dataclass(frozen=True)
class Settings:
    cuda_attn: str = "auto"         # RINGSP_CUDA_ATTN
    fa4: bool = True                # RINGSP_FA4
    fast_launch: bool = True        # RINGSP_FAST_LAUNCH
    check_every_call: bool = False  # RINGSP_CHECK_EVERY_CALL
    compile_backend: str = "inductor"  # RINGSP_COMPILE_BACKEND
    npu_attn: str = "fusion"        # RINGSP_NPU_ATTN
    cpu_avx512: bool = True         # RINGSP_CPU_NO_AVX512 unset
    cache_dir: str = ""             # RINGSP_CACHE_DIR, resolved
    ascend_lib: str | None = None   # RINGSP_ASCEND_LIB
    allow_untested: bool = False    # RINGSP_ALLOW_UNTESTED_VERSIONS


@dataclass(frozen=True)
class Variable:
    """One environment variable: how its text becomes a Settings field and back."""

    name: str
    field: str
    values: tuple | None  # the accepted texts; None: any text (a name or a path)
    default: str          # as the README shows it
    agreed: bool          # every rank of a group must have the same value
    meaning: str

    def parse(self, text):
        if self.values is not None and text not in self.values:
            raise ValueError(f"{self.name} must be one of {', '.join(self.values)}, got {text!r}")
        return _PARSE.get(self.name, lambda t: t)(text)

    def show(self, value):
        return _SHOW.get(self.name, str)(value)


_FLAG = ("0", "1")
VARIABLES = (
    Variable("RINGSP_CUDA_ATTN", "cuda_attn", ("auto", "triton", "cudnn", "fa4", "hopper"), "auto", True,
             "forces one CUDA attention path for every shape it can run (shapes the forced vendor kernel "
             "refuses run Triton); auto: the dispatch tables choose per shape class"),
    Variable("RINGSP_FA4", "fa4", _FLAG, "1", True,
             "0 turns the FlashAttention-4 path off (it is neither imported nor a dispatch candidate)"),
    Variable("RINGSP_FAST_LAUNCH", "fast_launch", _FLAG, "1", True,
             "0 launches the Triton kernels through Triton's JIT on every call: the same kernels, more host time"),
    Variable("RINGSP_CHECK_EVERY_CALL", "check_every_call", _FLAG, "0", True,
             "1: the parallel layer's agreement exchanges fingerprints on every call, not once per signature "
             "(catches a rank that changes its arguments later; one small collective per call)"),
    Variable("RINGSP_COMPILE_BACKEND", "compile_backend", None, "inductor", True,
             "the torch.compile backend of compile_transformer / `ringsp generate --compile` where the caller "
             "names none (tests use aot_eager)"),
    Variable("RINGSP_NPU_ATTN", "npu_attn", ("fusion", "fused_infer"), "fusion", True,
             "the Ascend attention kernel: torch_npu.npu_fusion_attention (LSE from its softmax max/sum) or "
             "npu_fused_infer_attention_score (LSE returned directly; float16/bfloat16, head dim a multiple "
             "of 16, more than one query row); neither has run on an NPU"),
    Variable("RINGSP_CPU_NO_AVX512", "cpu_avx512", None, "unset", True,
             "set (any value) to keep the C++ CPU kernels off their AVX-512 exp (read by the C++ library "
             "itself, once)"),
    Variable("RINGSP_CACHE_DIR", "cache_dir", None, "$XDG_CACHE_HOME/ringsp or ~/.cache/ringsp", False,
             "the folder of the per-machine dispatch cache (measured CUDA kernel choices); under SP every "
             "rank uses rank 0's table, so it may differ between machines"),
    Variable("RINGSP_ASCEND_LIB", "ascend_lib", None, "_ascend_C*.so in ringsp_kernels/", False,
             "the built AscendC merge library to load (a file per machine)"),
    Variable("RINGSP_ALLOW_UNTESTED_VERSIONS", "allow_untested", _FLAG, "0", False,
             "1: importing ringsp with a diffusers / transformers release outside the tested range warns "
             "instead of refusing (a per-machine install question, not compared across ranks)"),
)
BY_NAME = {v.name: v for v in VARIABLES}

_PARSE = {
    "RINGSP_FA4": lambda t: t == "1",
    "RINGSP_FAST_LAUNCH": lambda t: t == "1",
    "RINGSP_CHECK_EVERY_CALL": lambda t: t == "1",
    "RINGSP_ALLOW_UNTESTED_VERSIONS": lambda t: t == "1",
}
_SHOW = {
    "RINGSP_FA4": lambda v: "1" if v else "0",
    "RINGSP_FAST_LAUNCH": lambda v: "1" if v else "0",
    "RINGSP_CHECK_EVERY_CALL": lambda v: "1" if v else "0",
    "RINGSP_ALLOW_UNTESTED_VERSIONS": lambda v: "1" if v else "0",
    "RINGSP_CPU_NO_AVX512": lambda v: "unset" if v else "set",
    "RINGSP_ASCEND_LIB": lambda v: "unset" if v is None else v,
}
_current = []  # [Settings] once read


def _default_cache_dir(env):
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ringsp")


def read(env=None):
    """The Settings of `env` (default os.environ); ValueError names a variable with a bad value."""
    env = os.environ if env is None else env
    values = {}
    for var in VARIABLES:
        text = env.get(var.name)
        if var.name == "RINGSP_CPU_NO_AVX512":  # the C++ side tests presence, not the value
            values[var.field] = text is None
        elif var.name == "RINGSP_CACHE_DIR":
            values[var.field] = text or _default_cache_dir(env)
        elif var.name == "RINGSP_ASCEND_LIB":
            values[var.field] = text or None
        else:
            values[var.field] = var.parse(var.default if text is None else text)
    return Settings(**values)


def current():
    """This process's Settings, read from the environment on the first call."""
    if not _current:
        _current.append(read())
    return _current[0]


def override(**changes):
    """Replaces fields of this process's Settings (validated like the environment); returns
    the Settings before."""
    before = current()
    for name, value in changes.items():
        var = next((v for v in VARIABLES if v.field == name), None)
        if var is None:
            raise TypeError(f"Settings has no field {name!r}")
        if var.values is not None and var.show(value) not in var.values:
            raise ValueError(f"{var.name} must be one of {', '.join(var.values)}, got {value!r}")
    _current[0] = replace(before, **changes)
    return before


def restore(settings):
    """Puts back Settings that override() returned."""
    current()
    _current[0] = settings


def environment(settings=None):
    """{variable name: value as text} of every variable."""
    settings = current() if settings is None else settings
    return {v.name: v.show(getattr(settings, v.field)) for v in VARIABLES}


def agreed(settings=None):
    """{variable name: value as text} of the variables every rank of a group must share."""
    shown = environment(settings)
    return {v.name: shown[v.name] for v in VARIABLES if v.agreed}


caches.register("settings", _current.clear)
