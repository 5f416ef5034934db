"""ParallelConfig: how the world is split into Ulysses, ring and CFG axes."""
from dataclasses import dataclass

from . import cost_model


def _check_degree(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class ParallelConfig:
    """World = cfg_degree x ring_degree x ulysses_degree (cfg outermost, Ulysses innermost).

    Ulysses groups are consecutive ranks, rings run across them; with cfg_degree=2 the world
    is split into two halves, each its own sequence-parallel world (cond / uncond passes).
    """

    ulysses_degree: int = 1
    ring_degree: int = 1
    cfg_degree: int = 1

    def __post_init__(self):
        for name in ("ulysses_degree", "ring_degree", "cfg_degree"):
            _check_degree(name, getattr(self, name))

    @property
    def sp_degree(self):
        return self.ulysses_degree * self.ring_degree

    @property
    def world_size(self):
        return self.sp_degree * self.cfg_degree

    @classmethod
    def auto(cls, world_size, num_heads, seq_len, *, cfg_degree=1, batch=1, head_dim=128,
             bytes_per_element=2, constants=None):
        """The (ulysses, ring) split of world_size / cfg_degree that the cost model in
        `ringsp.parallel.cost_model` predicts to be fastest (ties go to more Ulysses)."""
        for name, value in (("world_size", world_size), ("num_heads", num_heads), ("seq_len", seq_len),
                            ("cfg_degree", cfg_degree), ("batch", batch), ("head_dim", head_dim)):
            _check_degree(name, value)
        if world_size % cfg_degree:
            raise ValueError(f"cfg_degree={cfg_degree} does not divide world_size={world_size}")
        constants = constants or cost_model.CONSTANTS

        def cost(pair):
            u, r = pair
            t = cost_model.attention_time(seq_len, num_heads, u, r, batch=batch, head_dim=head_dim,
                                          bytes_per_element=bytes_per_element, constants=constants)
            return (t, -u)

        u, r = min(cost_model.factor_pairs(world_size // cfg_degree), key=cost)
        return cls(ulysses_degree=u, ring_degree=r, cfg_degree=cfg_degree)
