"""Worker processes of ringsp.serve.rank's real request loop around a fake engine (no model
is loaded, so a pool starts in seconds): the prompt says what the run does.

    "ok"         every rank all-reduces once and rank 0 returns a report
    "raise:all"  every rank raises (the request fails, the workers serve on)
    "raise:R"    rank R raises alone; its peers wait inside the all-reduce
    "hang:R"     rank R sleeps; its peers wait inside the all-reduce
    "exit:R"     rank R ends without a Python error (os._exit(3))
    "guard:R"    rank R raises inside ringsp.fail_together while its peers wait in a guarded
                 all-reduce: every rank raises, and the process groups are out of step
"""
import os
import time

import torch


class FakeEngine:
    def __init__(self, rank):
        self.rank, self.device, self.pipe = rank, torch.device("cpu"), None

    def run(self, request, *, listener, **_):
        import torch.distributed as dist

        from ringsp.cli.worker import RankOutcome

        how, _, who = request.prompt.partition(":")
        listener("stage", "Denoising")
        if how == "guard":
            from ringsp.parallel import fail_together
            from ringsp.parallel.fail_together import wait

            with fail_together(None, timeout_s=30):
                if who == str(self.rank):
                    raise MemoryError(f"out of memory on rank {self.rank}")
                wait(dist.all_reduce(torch.ones(1), async_op=True))
        if how not in ("ok", "guard") and who in ("all", str(self.rank)):
            if how == "hang":
                time.sleep(3600)
            if how == "exit":
                os._exit(3)
            raise ValueError(f"fault on rank {self.rank}")
        dist.all_reduce(torch.ones(1))
        listener("step", 1)
        if self.rank != 0:
            return None
        return RankOutcome({"denoise": {"steps": 1}, "output": {"written": True}, "prompt": request.prompt})


def fake_rank(local_rank, config, port, jobs, events, warmup_steps):
    from ringsp.serve.rank import serve_loop

    serve_loop(local_rank, config, port, jobs, events, lambda: FakeEngine(local_rank))
