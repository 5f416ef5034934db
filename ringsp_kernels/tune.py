"""Deprecated alias of `python -m ringsp_kernels.cuda.tune` (the tuner moved into the CUDA wing);
`python -m ringsp_kernels.tune ...` still runs it, with a warning."""
import warnings

from .cuda.tune import main

if __name__ == "__main__":
    warnings.warn("`python -m ringsp_kernels.tune` is deprecated: use `python -m ringsp_kernels.cuda.tune`",
                  DeprecationWarning, stacklevel=1)
    raise SystemExit(main())
