"""A joint text mask as the SP attention takes it: valid tokens first, counted per row."""
from dataclasses import dataclass

import torch


@dataclass
class TextPlan:
    """How the text mask [B, T] enters the SP attention, prepared on the host once per mask.

    lens: CPU int64 [B], valid text tokens per row (None: no mask, all valid); rows with
    different counts attend in separate passes inside the op. order: [B, T] token order that
    puts each row's valid tokens first (None: every row is a prefix already); inverse undoes it.
    """
    lens: torch.Tensor | None
    order: torch.Tensor | None
    inverse: torch.Tensor | None

    def to(self, device):
        """order and inverse on `device`; lens stays on the host (the op reads it there)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TextPlan(self.lens, move(self.order), move(self.inverse))


def text_plan(mask):
    """The text mask [B, T] (None = all valid) as a TextPlan.

    The SP attention masks text by a valid-prefix length per row. Attention does not care
    about the order of keys, nor (up to the same permutation) of queries, so a mask with
    holes is made a prefix by moving the valid tokens to the front (and the output back
    afterwards). Masked text tokens still act as queries (their outputs are computed as
    diffusers computes them); they are never keys.
    """
    if mask is None:
        return TextPlan(None, None, None)
    mask = mask.detach().to("cpu", torch.bool)
    counts = mask.sum(dim=1)
    if bool((mask == (torch.arange(mask.shape[1]) < counts[:, None])).all()):
        return TextPlan(counts, None, None)
    # Stable sort on "is padding": valid tokens first, each part in its original order.
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    return TextPlan(counts, order, torch.argsort(order, dim=1))


def take_tokens(t, index):
    """t [B, T, H, D] with its tokens reordered per row by index [B, T]."""
    return t.gather(1, index[:, :, None, None].expand_as(t))
