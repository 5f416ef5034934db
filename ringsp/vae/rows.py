"""Which latent rows each rank decodes, and how shard sizes follow the decoder's upsampling."""
from dataclasses import dataclass

from ringsp.parallel.layout import split_rows

__all__ = ["RowShard", "split_rows"]


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
