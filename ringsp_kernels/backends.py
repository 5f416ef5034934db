"""The backends of the ops: each wing (cpu/, cuda/, npu/) registers one Backend when it is
imported, and the face, the op registration and the 8-bit checks find them here by device
type, never by module name.

A Backend says which op implementations it binds to which dispatch key, and what the layers
above need to know about it without importing it: the software versions its measured kernel
choices depend on (the dispatch disk cache is keyed on them), the facts every rank of a group
must share to make the same choices, and whether a device can run an 8-bit precision.
"""
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Backend:
    name: str                       # "cpu", "cuda", "npu"
    device_type: str                # the torch device type whose tensors it serves
    dispatch_key: str | None = None  # where `ops` are bound (None: the C++ library binds its own)
    ops: dict = field(default_factory=dict)  # op name -> implementation
    direct: bool = False            # plain eager tensors may call `ops` directly (no dispatcher)
    versions: Callable[[], dict] | None = None  # {name: version} its measured choices depend on
    facts: Callable[[], dict] | None = None     # {label: value} ranks must share for equal choices
    check_precision: Callable | None = None     # (q, precision) -> None, or raises ValueError


_REGISTERED = {}  # name -> Backend, in registration order


def register(backend):
    """Adds (or replaces) a backend; returns it."""
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a Backend, got {type(backend).__name__}")
    _REGISTERED[backend.name] = backend
    return backend


def registered():
    return tuple(_REGISTERED.values())


def for_device(device_type):
    """The backend serving `device_type` tensors, or None."""
    return next((b for b in _REGISTERED.values() if b.device_type == device_type), None)


def _merged(attr):
    out = {}
    for b in _REGISTERED.values():
        fn = getattr(b, attr)
        if fn is not None:
            out.update(fn())
    return out


def versions():
    """The versions every registered backend's measured choices depend on, merged."""
    return _merged("versions")


def facts():
    """What every rank of a group must share so that equal tables give equal choices."""
    return _merged("facts")
