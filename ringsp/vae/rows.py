"""Which latent rows each rank decodes, and how shard sizes follow the decoder's upsampling."""
from dataclasses import dataclass

__all__ = ["RowShard", "split_rows"]


def split_rows(height, parts):
    """Balanced contiguous split of `height` rows into `parts` slabs: (start, stop) per part.

    The first `height % parts` slabs get one row more, so sizes differ by at most one.
    """
    for name, n in (("height", height), ("parts", parts)):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if height < 0:
        raise ValueError(f"height must be >= 0, got {height}")
    base, extra = divmod(height, parts)
    bounds, start = [], 0
    for p in range(parts):
        stop = start + base + (1 if p < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


@dataclass(frozen=True)
class RowShard:
    """This rank's place in a row-split decode: rank/world within `group`, and every rank's
    latent row count (the same list on all ranks)."""

    group: object
    rank: int
    world: int
    latent_rows: tuple

    @property
    def has_prev(self):
        return self.rank > 0

    @property
    def has_next(self):
        return self.rank < self.world - 1

    def rows_at(self, local_rows):
        """Every rank's row count at a layer where this rank holds `local_rows` rows.

        Every layer of the decoder scales all shards by the same integer factor (upsampling
        doubles every rank's rows), so one local size fixes all of them."""
        own = self.latent_rows[self.rank]
        if local_rows % own:
            raise RuntimeError(
                f"rank {self.rank}: a layer holds {local_rows} rows, not a multiple of its {own} latent rows"
            )
        factor = local_rows // own
        return [n * factor for n in self.latent_rows]
