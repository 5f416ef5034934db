"""`ringsp generate` with one rank made to fail at the start of denoising, for
test_failures.py: `python tests/cli/faulty_run.py RANK:HOW PIDS_DIR [generate options]`.

HOW: exit (os._exit(3): no Python error), kill (SIGKILL, as the OOM killer does), hang
(sleeps, as a rank stuck outside any collective would), raise (a ValueError, as a bad hook
on one rank would). RANK "-" injects no fault (the ranks only report their pids). Every rank writes `<rank>.pid`
(its pid) into PIDS_DIR when it reaches denoising, and the failing rank `fault.time` (when
it failed), so the test can check that the run ended soon after and left no process.

The patch is made at import: spawned ranks import this file as their main module.
"""
import os
import signal
import sys
import time

import ringsp.cli.generation as generation

_FAULT = os.environ.get("RINGSP_TEST_FAULT", ":")  # set from argv by the driver below; inherited by the ranks
_PIDS = os.environ.get("RINGSP_TEST_PIDS", "")
_denoise = generation._denoise


def _faulty_denoise(*args, **kwargs):
    rank, how = _FAULT.split(":")
    me = os.environ.get("RANK")
    with open(os.path.join(_PIDS, f"{me}.pid"), "w") as f:
        f.write(str(os.getpid()))
    if me == rank:
        with open(os.path.join(_PIDS, "fault.time"), "w") as f:
            f.write(repr(time.time()))
        if how == "exit":
            os._exit(3)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "hang":
            time.sleep(3600)
        if how == "raise":
            raise ValueError(f"fault injected on rank {rank}")
        raise ValueError(f"unknown fault {how!r}")
    return _denoise(*args, **kwargs)


generation._denoise = _faulty_denoise

if __name__ == "__main__":
    os.environ["RINGSP_TEST_FAULT"], os.environ["RINGSP_TEST_PIDS"] = sys.argv[1], sys.argv[2]
    _FAULT, _PIDS = sys.argv[1], sys.argv[2]
    from ringsp.cli.main import main

    sys.exit(main(sys.argv[3:]))
