"""Layer 1: sequence-parallel attention over process groups (ring, Ulysses, USP), the
device mesh that holds the groups, and sequence sharding."""
from .config import ParallelConfig
from .fail_together import PeerFailure, fail_together
from .mesh import ParallelContext, init_parallel
from .ring import ring_attention
from .sharding import gather_sequence, shard_sequence
from .ulysses import ulysses_attention
from .usp import usp_attention

__all__ = [
    "ParallelConfig", "ParallelContext", "init_parallel", "shard_sequence", "gather_sequence",
    "ring_attention", "ulysses_attention", "usp_attention", "fail_together", "PeerFailure",
]
