"""The CPU wing of the ops: the C++ library built from csrc/ (the `ringsp` op schemas that
every backend shares, and the CPU kernels, which the library binds to the CPU key itself).
Importing the wing loads the library (library.py) and registers the CPU Backend."""
from .. import backends
from .library import load_ops_library

load_ops_library()
BACKEND = backends.register(backends.Backend(name="cpu", device_type="cpu"))
