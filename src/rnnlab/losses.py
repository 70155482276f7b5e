"""Small pure functions for latent-variable models: Gaussian densities, closed-form KL, the ELBO and
the importance-weighted bound. Each works elementwise or over the last dimension and has its own
tests (closed-form KL against Monte Carlo; the IW bound against an exact likelihood).

>>> z = torch.zeros(3)
>>> float(gaussian_kl(z, z, z, z).sum())
0.0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(x; mean, exp(log_var)) summed over the last dimension (a diagonal Gaussian)."""
    return -0.5 * (LOG_2PI + log_var + (x - mean) ** 2 / log_var.exp()).sum(-1)


def gaussian_kl(mean_q: Tensor, log_var_q: Tensor, mean_p: Tensor, log_var_p: Tensor) -> Tensor:
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) in closed form, summed over the last dimension:
    1/2 sum [log var_p - log var_q + (var_q + (mean_q - mean_p)^2) / var_p - 1]."""
    var_p = log_var_p.exp()
    terms = log_var_p - log_var_q + (log_var_q.exp() + (mean_q - mean_p) ** 2) / var_p - 1
    return 0.5 * terms.sum(-1)


def mixture_log_prob(x: Tensor, logits: Tensor, means: Tensor, log_vars: Tensor) -> Tensor:
    """log of a mixture of diagonal Gaussians: x (..., D), logits (..., K), means and log_vars
    (..., K, D) -> (...)."""
    per_component = gaussian_log_prob(x.unsqueeze(-2), means, log_vars)  # (..., K)
    return torch.logsumexp(torch.log_softmax(logits, -1) + per_component, -1)


def elbo(log_likelihood: Tensor, kl: Tensor, kl_weight: float = 1.0) -> Tensor:
    """The evidence lower bound E_q[log p(x | z)] - KL(q || p), with the KL weighted for
    annealing (the bound itself is the weight 1)."""
    return log_likelihood - kl_weight * kl


def importance_weighted_bound(log_weights: Tensor, dim: int = 0) -> Tensor:
    """log (1/k sum_i w_i) from log w_i = log p(x, z_i) - log q(z_i | x), z_i ~ q, over ``dim``
    (Burda et al. 2016): a lower bound of log p(x) that tightens as k grows and equals it when q
    is the exact posterior."""
    k = log_weights.shape[dim]
    return torch.logsumexp(log_weights, dim) - math.log(k)


KL_SCHEDULES = ("linear", "logistic", "cyclical")


def kl_weight(schedule: str, progress: float, anneal: float) -> float:
    """The KL weight at ``progress`` (epochs done, fractional) for annealing over ``anneal``
    epochs: ``linear`` 0 -> 1; ``logistic`` 1 / (1 + exp(-10 (progress / anneal - 1/2)))
    (Bowman et al. 2016's sigmoid); ``cyclical`` repeats cycles of ``anneal`` epochs, rising
    linearly over the first half of each and holding 1 over the second (Fu et al. 2019).
    ``anneal`` 0: always 1.

    >>> [round(kl_weight("cyclical", p, 4), 2) for p in (0, 1, 2, 3, 4, 5)]
    [0.0, 0.5, 1.0, 1.0, 0.0, 0.5]
    """
    if anneal <= 0:
        return 1.0
    if schedule == "linear":
        return min(1.0, progress / anneal)
    if schedule == "logistic":
        return 1.0 / (1.0 + math.exp(-10.0 * (progress / anneal - 0.5)))
    if schedule == "cyclical":
        phase = (progress % anneal) / anneal
        return min(1.0, 2.0 * phase)
    raise ValueError(f"unknown KL schedule {schedule!r}; known: {', '.join(KL_SCHEDULES)}")


def free_bits_kl(kl_units: Tensor, free_bits: float) -> Tensor:
    """Kingma et al. 2016's free bits: each latent unit's KL, averaged over the batch, counts at
    least ``free_bits`` nats; (B, Z) -> a scalar per sentence (the sum over units)."""
    return kl_units.mean(0).clamp(min=free_bits).sum()
