"""One registry of the ops layer's module-level caches (device names and capabilities, plans
per shape, dispatch tables, loaded libraries, the settings read), so that one call forgets
them all: `ringsp_kernels.clear_caches()`. Tests call it instead of reaching into a module;
in a run nothing needs it (every cache is keyed on what it depends on)."""

_CLEARERS = {}  # name -> function that empties that cache


def register(name, clear):
    """Registers `clear()` (which empties one cache) under `name`; returns `clear`."""
    if name in _CLEARERS and _CLEARERS[name] is not clear:
        raise ValueError(f"a cache named {name!r} is already registered")
    _CLEARERS[name] = clear
    return clear


def unregister(name):
    _CLEARERS.pop(name, None)


def names():
    return tuple(_CLEARERS)


def clear_caches():
    """Empties every registered cache of the ops layer."""
    for clear in list(_CLEARERS.values()):
        clear()
