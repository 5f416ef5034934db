"""`python -m ringsp_bench [NAME ARGS...]`: the same as `ringsp-bench`."""
import sys

from .catalog import main

sys.exit(main())
