"""Launching a compiled Triton kernel without the JIT's per-call work.

`fn[grid](*args, **constexprs)` re-derives on every call what a ring step never changes:
it specialises each argument, hashes the result into the kernel cache, checks globals and
builds launch metadata (15-80 us of host time, more through triton.autotune). Here the
caller names a key that determines all of that -- the config, the constexprs, the exact
integer arguments Triton specialises on (strides, H) and the 16-byte alignment of every
pointer -- and the first call of a key goes through `fn[grid]`, whose return value (the
CompiledKernel) is kept; later calls hand the arguments straight to its launcher.

Version notes: the direct call uses CompiledKernel.run / .function / .packed_metadata and
the launcher's argument order (grid, stream, function, packed metadata, launch metadata,
enter hook, exit hook, *all bound args including constexprs), read from the sources of
Triton 3.6 and 3.9 (identical there); it is enabled for 3.6 <= version < 3.10 only. Other
versions, the interpreter (TRITON_INTERPRET=1, Triton's own switch, read here once for the
whole wing), or RINGSP_FAST_LAUNCH=0 (ringsp_kernels.settings) take the `fn[grid]` path on every call
(correct, only slower). The entry keeps the CompiledKernel alive (3.9 unloads a collected
kernel's module). Launch hooks (proton and other profilers) are honoured: with a hook
set, launch metadata is built as Triton does.
"""
import os

import triton

from .. import settings

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _version_ok():
    try:
        major, minor = (int(x) for x in triton.__version__.split(".")[:2])
    except ValueError:
        return False
    return (3, 6) <= (major, minor) < (3, 10)


def _knobs():
    try:
        from triton import knobs

        knobs.runtime.launch_enter_hook  # noqa: B018 -- probes the attribute
        knobs.runtime.launch_exit_hook  # noqa: B018
        return knobs.runtime
    except (ImportError, AttributeError):
        return None


_RUNTIME = _knobs()
ENABLED = (not INTERPRET and _version_ok() and _RUNTIME is not None
           and settings.current().fast_launch)


def _idle(hook):
    """A hook that does nothing: None or an empty HookChain (Triton >= 3.5's default)."""
    return hook is None or (hasattr(hook, "calls") and not hook.calls)


class CachedKernel:
    """A Triton JIT function with its compiled kernels cached per caller-chosen key.

    launch(key, grid, args, make): `args` are the runtime arguments in signature order;
    make() -> (constexprs, options) is called on a key's first launch only: the remaining
    parameters by name (all of them, defaults included) and the launch options (num_warps,
    num_stages). `key` must determine both and Triton's specialisation of `args`.
    """

    def __init__(self, fn, max_entries=4096):
        self.fn = fn
        self.names = list(fn.arg_names)
        self.max_entries = max_entries
        self.entries = {}
        self.fast_calls = 0

    def launch(self, key, grid, args, make, stream=None):
        entry = self.entries.get(key)
        if entry is None:
            return self._first(key, grid, args, *make())
        run, function, packed, tail, kernel = entry
        if run is None:  # no direct call on this Triton: the JIT path, with the same arguments
            constexprs, options = tail
            self.fn[grid](*args, **constexprs, **options)
            return
        if stream is None:
            stream = _current_stream()
        enter, leave = _RUNTIME.launch_enter_hook, _RUNTIME.launch_exit_hook
        if _idle(enter) and _idle(leave):
            run(grid[0], grid[1], grid[2], stream, function, packed, None, None, None, *args, *tail)
        else:
            full = (*args, *tail)
            meta = kernel.launch_metadata(grid, stream, *full)
            run(grid[0], grid[1], grid[2], stream, function, packed, meta, enter, leave, *full)
        self.fast_calls += 1

    def _first(self, key, grid, args, constexprs, options):
        kernel = self.fn[grid](*args, **constexprs, **options)
        if len(self.entries) >= self.max_entries:  # bounded: shapes that never repeat
            self.entries.clear()
        self.entries[key] = self._handles(kernel, args, constexprs, options)
        return kernel

    def _handles(self, kernel, args, constexprs, options):
        """(run, function, packed metadata, constexpr tail, kernel), or (None, ..., (constexprs,
        options), None) where the direct call is not known to be right for this Triton."""
        none = (None, None, None, (constexprs, options), None)
        if not ENABLED or kernel is None:
            return none
        if hasattr(kernel, "result"):  # asynchronous compilation hands back a future
            kernel = kernel.result()
        rest = self.names[len(args):]
        if set(rest) != set(constexprs) or len(args) + len(rest) != len(self.names):
            return none
        try:
            run, function, packed = kernel.run, kernel.function, kernel.packed_metadata
        except AttributeError:
            return none
        if function is None or not callable(run):
            return none
        return run, function, packed, tuple(constexprs[n] for n in rest), kernel


def _stream_getter():
    import torch

    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    get_dev = getattr(torch._C, "_cuda_getDevice", None)
    if raw is not None and get_dev is not None:
        return lambda: raw(get_dev())
    return lambda: torch.cuda.current_stream().cuda_stream


_current_stream = _stream_getter()
