"""Output distributions: ``log_prob(x, h)`` and ``sample(h)`` over one frame given a state."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BernoulliHead(nn.Module):
    """Factorised Bernoulli over the D units of a frame: p(x_t | h) = prod_k p_k^x (1-p_k)^(1-x),
    with logits = W h + b (``proj``: (D, H) weight, (D,) bias; torch.nn.Linear's initialisation).

    >>> head = BernoulliHead(16, 88)
    >>> tuple(head.log_prob(torch.zeros(2, 5, 88), torch.zeros(2, 5, 16)).shape)
    (2, 5)
    """

    def __init__(self, hidden_size: int, frame_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, frame_size)

    def log_prob(self, x: Tensor, h: Tensor) -> Tensor:
        """log p(x | h) summed over the units of the frame: (..., D), (..., H) -> (...)."""
        logits = self.proj(h)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    def sample(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One frame per state: (..., H) -> (..., D) in {0, 1}."""
        return torch.bernoulli(torch.sigmoid(self.proj(h)), generator=generator)
