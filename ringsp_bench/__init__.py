"""ringsp's benchmarks: one module per measurement, each printing a table and writing JSON with
its device, versions, date and command (records and results live in the checkout's bench/).

    python -m ringsp_bench.<name> [args]    # from the repository root; no install needed
    ringsp-bench <name> [args]              # the same, installed; `ringsp-bench` alone lists them

Module names carry a prefix or a qualifier (attn_kernels, not kernels) so that none of them is
also the name of a published package.
"""
