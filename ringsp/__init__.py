"""ringsp: sequence-parallel attention, models and VAE decoding for diffusion transformers.

Layers (imports point down only): ringsp_kernels (ops) <- ringsp.parallel <- ringsp.models,
ringsp.vae, ringsp.cli. Public names are re-exported here.
"""
__version__ = "0.1.0"
from ringsp.vae import parallel_vae_decode  # noqa: E402,F401
from .models import disable_sequence_parallel, enable_sequence_parallel  # noqa: E402,F401
from .parallel import (  # noqa: E402,F401
    ParallelConfig, ParallelContext, PeerFailure, fail_together, gather_sequence, init_parallel, ring_attention,
    shard_sequence, ulysses_attention, usp_attention,
)
