"""Generic, removable plumbing for putting a model under sequence parallelism.

`HookSet` records every change an adapter makes to a model (torch hooks, swapped attention
processors) so that `remove()` puts the model back exactly as it was. `call_arg` /
`with_call_arg` read and replace one argument of a hooked call whether it came positionally
or by keyword.
"""
from ringsp.parallel.mesh import ParallelContext

_MISSING = object()


class HookSet:
    """The torch hook handles and attribute swaps an adapter installed, undone by `remove()`."""

    def __init__(self):
        self._handles = []
        self._swaps = []  # (obj, attribute name, original value)

    def add_handle(self, handle):
        self._handles.append(handle)

    def swap_attr(self, obj, name, value):
        """Sets obj.name = value, remembering the original for `remove()`."""
        self._swaps.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def remove(self):
        """Removes every hook and restores every swapped attribute (last change undone first)."""
        for handle in reversed(self._handles):
            handle.remove()
        for obj, name, original in reversed(self._swaps):
            setattr(obj, name, original)
        self._handles.clear()
        self._swaps.clear()


def call_arg(args, kwargs, index, name, default=_MISSING):
    """The argument `name` of a call made as f(*args, **kwargs), `index` being its position."""
    if name in kwargs:
        return kwargs[name]
    if index < len(args):
        return args[index]
    if default is _MISSING:
        raise TypeError(f"missing argument {name!r}")
    return default


def with_call_arg(args, kwargs, index, name, value):
    """(args, kwargs) with the argument `name` replaced by value, where the caller passed it."""
    if name in kwargs or index >= len(args):
        return args, {**kwargs, name: value}
    return args[:index] + (value,) + args[index + 1:], kwargs


def check_adapter_target(transformer, ctx):
    """What every model adapter refuses: a context that is not ringsp's, and a transformer
    that already runs diffusers' own parallelism (the two cannot be stacked)."""
    if not isinstance(ctx, ParallelContext):
        raise TypeError(f"ctx must be a ParallelContext from ringsp.init_parallel, got {type(ctx).__name__}")
    if getattr(transformer, "_parallel_config", None) is not None:
        raise ValueError("transformer already runs diffusers' own parallelism (enable_parallelism); "
                         "ringsp's sequence parallelism cannot be stacked on it")


def check_precision_name(precision):
    """The adapters' attention_precision: None, or an 8-bit precision of the ops layer (whether
    the device runs it is checked at the first forward, on every rank alike)."""
    import ringsp_kernels as rk

    if precision is not None and precision not in rk.PRECISIONS:
        raise ValueError(f"attention_precision must be None (the activations' dtype) or one of {rk.PRECISIONS}, "
                         f"got {precision!r}")
    return precision
