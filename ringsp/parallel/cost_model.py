"""A first-order cost model of one SP attention call, used by `ParallelConfig.auto`.

Every hardware constant lives in `CONSTANTS`. The defaults are rough figures for one H100
node (NVLink); they are meant to be calibrated by `ringsp_bench.sp_attention`, which measures
single-device attention throughput, all-to-all and P2P bandwidth on the target machine.
The model only has to rank configurations, not predict times exactly.
"""
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CostConstants:
    attn_flops_per_s: float = 350e12   # achieved attention throughput of one device (bf16)
    a2a_bytes_per_s: float = 120e9     # per-device all-to-all bandwidth
    p2p_bytes_per_s: float = 120e9     # per-device ring P2P bandwidth (one direction)
    a2a_latency_s: float = 30e-6       # fixed cost of one all-to-all
    ring_step_latency_s: float = 20e-6  # fixed cost of one ring step (launch + sync)
    hbm_bytes_per_s: float = 3.0e12    # device memory bandwidth (the fp32 state of every step)
    overlap_slowdown: float = 0.2      # compute slowdown while a transfer shares the device


CONSTANTS = CostConstants()


def attention_time(seq_len, num_heads, ulysses, ring, *, batch=1, head_dim=128,
                   bytes_per_element=2, constants=CONSTANTS):
    """Modelled seconds for one SP attention call of a u x r configuration."""
    c = constants
    sp = ulysses * ring
    block = math.ceil(seq_len / sp)                    # tokens per rank
    heads = math.ceil(num_heads / ulysses)             # heads per rank after Ulysses (padded)
    chunk = block * ulysses                            # tokens per ring block
    step_flops = 4.0 * batch * heads * head_dim * chunk * chunk
    step_compute = step_flops / c.attn_flops_per_s
    total = ring * (step_compute + c.ring_step_latency_s)
    if ring > 1:  # K and V of one block per step, hidden behind the step's compute
        step_bytes = 2.0 * batch * chunk * heads * head_dim * bytes_per_element
        busy = step_compute * (1.0 + c.overlap_slowdown)
        total += (ring - 1) * (max(busy, step_bytes / c.p2p_bytes_per_s) - step_compute)
        state_bytes = 2.0 * batch * chunk * heads * (head_dim + 1) * 4  # acc + lse read and written
        total += ring * state_bytes / c.hbm_bytes_per_s
    if ulysses > 1:  # q, k, v in and the output back, (u-1)/u of each leaves the rank
        shard_bytes = batch * block * heads * ulysses * head_dim * bytes_per_element
        moved = 4.0 * shard_bytes * (ulysses - 1) / ulysses
        total += moved / c.a2a_bytes_per_s + 2 * c.a2a_latency_s
    return total


def factor_pairs(n):
    """All (ulysses, ring) with ulysses * ring == n."""
    return [(u, n // u) for u in range(1, n + 1) if n % u == 0]
