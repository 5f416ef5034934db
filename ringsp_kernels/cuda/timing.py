"""Adaptive timing of competing kernels: sample them in alternation until the gap between
the two best is larger than their spread (or too small to matter), within a cap.

Each sample times `reps` back-to-back calls (at least ~2 ms of them) between two CUDA
events, recorded behind a short GPU spin so the host queues the calls before the clock
starts: a candidate is timed as a pipeline of calls sees it -- its GPU time where the host
keeps ahead, its host time where it cannot (a library with a slow Python wrapper on a short
block) -- not charged the latency of its first launch. A ring of N steps is such a pipeline.
The decision rules (settled, prune) are pure functions, tested on the CPU.
"""
import statistics
import time


def quartiles(xs):
    xs = sorted(xs)
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[1], q[2]


def settled(a, b, tie=0.01):
    """Whether samples `a` and `b` (ms) already say which is faster: the gap between their
    medians exceeds both interquartile ranges, or the gap is below `tie` (relative) while
    both spreads are too -- then either choice is as good."""
    qa, qb = quartiles(a), quartiles(b)
    gap = abs(qa[1] - qb[1])
    spread = max(qa[2] - qa[0], qb[2] - qb[0])
    small = tie * min(qa[1], qb[1])
    return gap > spread or (gap < small and spread < small)


def prune(samples, factor=1.10):
    """Names whose samples are clearly slower than the best: median above factor x the best
    median and lower quartile above the best's upper quartile."""
    meds = {n: quartiles(s) for n, s in samples.items()}
    best = min(meds, key=lambda n: meds[n][1])
    return [n for n, q in meds.items()
            if n != best and q[1] > factor * meds[best][1] and q[0] > meds[best][2]]


def ranked(samples):
    """Names sorted by median (fastest first; ties by name for determinism)."""
    return sorted(samples, key=lambda n: (quartiles(samples[n])[1], n))


SPIN_CYCLES = 1_000_000  # ~0.5 ms of GPU clock: the host's head start in queueing a sample


class _Clock:
    """CUDA events around a batch of calls (wall clock on a CPU, for tests)."""

    def __init__(self, cuda):
        self.cuda = cuda
        if cuda:
            import torch

            self.torch = torch
            self.spin = getattr(torch.cuda, "_sleep", None)

    def time(self, fn, reps):
        if not self.cuda:
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            return (time.perf_counter() - t0) * 1e3 / reps
        ev = self.torch.cuda.Event
        start, end = ev(enable_timing=True), ev(enable_timing=True)
        if self.spin is not None:
            self.spin(SPIN_CYCLES)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / reps


def compare(fns, cuda=True, min_samples=3, max_samples=30, budget_s=2.0, sample_ms=2.0):
    """Times each callable of `fns` (name -> fn) and returns name -> per-call ms samples.

    A candidate that raises on its first call (a config the compiler refuses, a shape the
    vendor library rejects) is dropped. Sampling stops once the two best are settled(),
    after `max_samples` rounds, or after `budget_s` seconds of sampling.
    """
    clock = _Clock(cuda)
    reps, samples = {}, {}
    for name, fn in fns.items():
        try:
            fn()  # compile / plan / autotune outside the timing
            once = max(clock.time(fn, 1), 1e-4)
        except Exception:  # noqa: BLE001 -- any failure disqualifies the candidate
            continue
        reps[name] = max(1, min(200, int(sample_ms / once)))
        samples[name] = []
    if not samples:
        raise RuntimeError("no candidate could run")
    alive = set(samples)  # pruned candidates keep their samples: the caller ranks them all
    t_end = time.perf_counter() + budget_s
    for rnd in range(max_samples):
        for name in sorted(alive):
            samples[name].append(clock.time(fns[name], reps[name]))
        if rnd + 1 < min_samples:
            continue
        alive -= set(prune({n: samples[n] for n in alive}))
        order = ranked({n: samples[n] for n in alive})
        if len(order) == 1 or settled(samples[order[0]], samples[order[1]]) or time.perf_counter() > t_end:
            break
    return samples
