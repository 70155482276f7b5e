"""Output distributions: ``log_prob(x, h)`` and ``sample(h)`` over one frame given a state."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab import device as draw


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
        return draw.bernoulli(torch.sigmoid(self.proj(h)), generator)

    def logits(self, h: Tensor) -> Tensor:
        """(..., H) -> (..., D): the logit of each unit."""
        return self.proj(h)


class CategoricalHead(nn.Module):
    """A softmax over K classes: ``logits(h)`` (..., K), ``log_prob(target, h)`` (...) for integer
    targets (the class-at-the-last-step and class-at-every-step heads of the long-lag tasks).

    >>> head = CategoricalHead(16, 4)
    >>> tuple(head.log_prob(torch.zeros(3, dtype=torch.long), torch.zeros(3, 16)).shape)
    (3,)
    """

    def __init__(self, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, num_classes)

    def logits(self, h: Tensor) -> Tensor:
        return self.proj(h)

    def log_prob(self, target: Tensor, h: Tensor) -> Tensor:
        return -F.cross_entropy(self.logits(h).movedim(-1, 1), target, reduction="none")


class RegressionHead(nn.Module):
    """A real value per state (the regression head of the adding and multiplication problems):
    (..., H) -> (...), trained with the squared error."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)

    def logits(self, h: Tensor) -> Tensor:
        return self.proj(h)[..., 0]


def last_step(h: Tensor, lengths: Tensor) -> Tensor:
    """The state at each sequence's last real step: (B, T, H), (B,) -> (B, H).

    >>> last_step(torch.arange(6.0).view(1, 3, 2).repeat(2, 1, 1), torch.tensor([3, 1])).tolist()
    [[4.0, 5.0], [0.0, 1.0]]
    """
    index = (lengths.to(h.device) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.shape[-1])
    return h.gather(1, index)[:, 0]


class NADEHead(nn.Module):
    """A NADE over the D units of a frame whose biases are set by the recurrent state (the
    RNN-NADE of Boulanger-Lewandowski et al. 2012):

        b_v = U_v h + b_v0,   b_h = U_h h + b_h0,
        a_i = b_h + W[:, :i] x_{<i},   p(x_i = 1 | x_{<i}) = sigma(b_v[i] + V[i] . sigma(a_i)),

    with W (K, D) and V (D, K) shared over time. ``log_prob`` is exact and vectorised over the
    batch, time and the D units (an exclusive cumulative sum gives every a_i at once);
    ``sample`` draws the units in order.

    >>> head = NADEHead(16, 88, 20)
    >>> tuple(head.log_prob(torch.zeros(2, 5, 88), torch.zeros(2, 5, 16)).shape)
    (2, 5)
    """

    def __init__(self, hidden_size: int, frame_size: int, nade_size: int) -> None:
        super().__init__()
        self.frame_size, self.nade_size = frame_size, nade_size
        self.to_bv = nn.Linear(hidden_size, frame_size)  # U_v and b_v0
        self.to_bh = nn.Linear(hidden_size, nade_size)  # U_h and b_h0
        self.W = nn.Parameter(torch.empty(nade_size, frame_size))
        self.V = nn.Parameter(torch.empty(frame_size, nade_size))
        nn.init.uniform_(self.W, -1 / frame_size**0.5, 1 / frame_size**0.5)
        nn.init.uniform_(self.V, -1 / nade_size**0.5, 1 / nade_size**0.5)

    def logits(self, x: Tensor, h: Tensor) -> Tensor:
        """The logit of p(x_i = 1 | x_<i, h) for every unit i: (..., D), (..., H) -> (..., D)."""
        contrib = x.unsqueeze(-1) * self.W.t()  # (..., D, K): x_j W[:, j]
        before = contrib.cumsum(-2) - contrib  # exclusive: sum over j < i
        hidden = torch.sigmoid(self.to_bh(h).unsqueeze(-2) + before)  # (..., D, K)
        return self.to_bv(h) + (hidden * self.V).sum(-1)

    def log_prob(self, x: Tensor, h: Tensor) -> Tensor:
        """log p(x | h), exact: (..., D), (..., H) -> (...)."""
        logits = self.logits(x, h)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    def sample(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling, unit by unit: (..., H) -> (..., D) in {0, 1}."""
        b_v, a = self.to_bv(h), self.to_bh(h)
        x = torch.zeros(*h.shape[:-1], self.frame_size, device=h.device, dtype=h.dtype)
        for i in range(self.frame_size):
            p = torch.sigmoid(b_v[..., i] + (torch.sigmoid(a) * self.V[i]).sum(-1))
            x[..., i] = draw.bernoulli(p, generator)
            a = a + x[..., i : i + 1] * self.W[:, i]
        return x


class GaussianHead(nn.Module):
    """A diagonal Gaussian over a real-valued frame: mean and log-variance from the state."""

    def __init__(self, hidden_size: int, frame_size: int) -> None:
        super().__init__()
        self.mean = nn.Linear(hidden_size, frame_size)
        self.log_var = nn.Linear(hidden_size, frame_size)

    def log_prob(self, x: Tensor, h: Tensor) -> Tensor:
        from rnnlab.losses import gaussian_log_prob

        return gaussian_log_prob(x, self.mean(h), self.log_var(h))

    def sample(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean, std = self.mean(h), (0.5 * self.log_var(h)).exp()
        return mean + std * draw.normal(mean.shape, generator, mean)


class MixtureGaussianHead(nn.Module):
    """A mixture of K diagonal Gaussians over a real-valued frame."""

    def __init__(self, hidden_size: int, frame_size: int, components: int) -> None:
        super().__init__()
        self.K, self.D = components, frame_size
        self.logits = nn.Linear(hidden_size, components)
        self.means = nn.Linear(hidden_size, components * frame_size)
        self.log_vars = nn.Linear(hidden_size, components * frame_size)

    def _params(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shape = (*h.shape[:-1], self.K, self.D)
        return self.logits(h), self.means(h).view(shape), self.log_vars(h).view(shape)

    def log_prob(self, x: Tensor, h: Tensor) -> Tensor:
        from rnnlab.losses import mixture_log_prob

        return mixture_log_prob(x, *self._params(h))

    def sample(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        logits, means, log_vars = self._params(h)
        k = draw.categorical(logits.softmax(-1).reshape(-1, self.K), generator)
        k = k.view(*h.shape[:-1], 1, 1).expand(*h.shape[:-1], 1, self.D)
        mean, log_var = means.gather(-2, k)[..., 0, :], log_vars.gather(-2, k)[..., 0, :]
        noise = draw.normal(mean.shape, generator, mean)
        return mean + (0.5 * log_var).exp() * noise
