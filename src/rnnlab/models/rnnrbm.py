"""The RNN-RBM (Boulanger-Lewandowski, Bengio & Vincent 2012, ICML, arXiv 1206.6392): a sequence
of RBMs over the D keys of each frame whose biases the recurrent state of the previous step sets.

At step t, with u_{t-1} the recurrent state after the frames v_1..v_{t-1}:

    b_v^t = b_v + W_uv u_{t-1},    b_h^t = b_h + W_uh u_{t-1}
    E(v, h) = -b_v^t . v - b_h^t . h - v^T W h
    P(v_t | u_{t-1}) = exp(-F_t(v_t)) / Z_t,
    F_t(v) = -b_v^t . v - sum_j softplus(b_h^t_j + (v W)_j)                     (free energy)
    u_t = Recurrent(v_t, u_{t-1})   (the paper's u_t = tanh(b_u + W_uu u_{t-1} + W_vu v_t);
                                     here any cell of rnnlab's registry)

W (D, K) is shared over time. Training, as in the paper: for every frame a CD-k chain from v_t gives
v*_t; the loss sum_t F_t(v_t) - F_t(v*_t), with v*_t held constant, has the CD estimate of the
log-likelihood gradient with respect to W, b_v^t and b_h^t, and autograd carries the gradient
through b_v^t, b_h^t into W_uv, W_uh and the recurrent network (backpropagation through time).

Z_t is intractable for D = 88: ``ais_log_partition`` estimates it by annealed importance sampling
(Neal 2001; Salakhutdinov & Murray 2008), ``exact_log_partition`` enumerates it for small D.

Deviation: the paper learns u_0; here the recurrence reads a zero frame from a zero state first
(as ``RNNPredictor``), so u_0 is a constant set by the cell's biases.

>>> model = RNNRBM(ModelConfig(cell="tanh", hidden_size=8), rbm_size=6)
>>> b_v, b_h = model.conditional_biases(torch.zeros(2, 5, 88))
>>> tuple(b_v.shape), tuple(b_h.shape)
((2, 5, 88), (2, 5, 6))
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import ConfigError
from rnnlab.models.rnn import ModelConfig, make_recurrent, previous_frames

MAX_EXACT_UNITS = 20  # exact_log_partition enumerates 2^D visible states


# --- the RBM of one frame ---------------------------------------------------------------------
def free_energy(v: Tensor, b_v: Tensor, b_h: Tensor, W: Tensor) -> Tensor:
    """F(v) = -b_v . v - sum_j softplus(b_h_j + (v W)_j), the hidden units summed out:
    v (..., D), b_v (..., D), b_h (..., K), W (D, K) -> (...)."""
    return -(v * b_v).sum(-1) - F.softplus(b_h + v @ W).sum(-1)


def gibbs(v: Tensor, b_v: Tensor, b_h: Tensor, W: Tensor, steps: int,
          generator: torch.Generator | None = None, beta: float = 1.0) -> Tensor:  # fmt: skip
    """``steps`` rounds of block Gibbs sampling h ~ P(h | v), v ~ P(v | h) from v, in the RBM
    whose interaction and hidden biases are scaled by ``beta`` (AIS's intermediate
    distributions; 1 is the RBM itself): P(h_j = 1 | v) = sigma(beta (b_h + v W)_j),
    P(v_i = 1 | h) = sigma(b_v_i + beta (W h)_i). Shapes as ``free_energy``; returns v (..., D)."""
    for _ in range(steps):
        h = bernoulli(torch.sigmoid(beta * (b_h + v @ W)), generator)
        v = bernoulli(torch.sigmoid(b_v + beta * (h @ W.t())), generator)
    return v


def bernoulli(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli(p) draws as u < p, u ~ U[0, 1) (on the CPU from ``generator`` if given): half
    the time of ``torch.bernoulli`` with a generator, which matters in AIS's inner loop."""
    if generator is None:
        u = torch.rand(p.shape, dtype=p.dtype, device=p.device)
    else:
        u = torch.rand(p.shape, dtype=p.dtype, generator=generator).to(p.device)
    return (u < p).to(p.dtype)


def exact_log_partition(b_v: Tensor, b_h: Tensor, W: Tensor) -> Tensor:
    """log Z = log sum_v exp(-F(v)), by enumerating the 2^D visible states (D at most 20):
    b_v (..., D), b_h (..., K) -> (...)."""
    D = W.shape[0]
    if D > MAX_EXACT_UNITS:
        raise ConfigError(f"exact_log_partition enumerates 2^D states: D must be at most "
                          f"{MAX_EXACT_UNITS}, got {D}")  # fmt: skip
    states = all_binary(D, W.dtype, W.device)  # (2^D, D)
    neg_f = -free_energy(states, b_v.unsqueeze(-2), b_h.unsqueeze(-2), W)  # (..., 2^D)
    return torch.logsumexp(neg_f, -1)


def all_binary(n: int, dtype: torch.dtype = torch.float64, device: torch.device | None = None,
               ) -> Tensor:  # fmt: skip
    """Every vector of {0, 1}^n: (2^n, n)."""
    codes = torch.arange(2**n, device=device)
    return ((codes[:, None] >> torch.arange(n, device=device)) & 1).to(dtype)


def uniform_betas(temperatures: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The AIS schedule 0 = beta_0 < beta_1 < ... < beta_S = 1, S = ``temperatures``, evenly
    spaced."""
    return torch.linspace(0.0, 1.0, temperatures + 1, dtype=dtype)


class AISEstimate(NamedTuple):
    """log_z (...): the estimate of log Z; log_weights (..., M): each chain's log importance
    weight, log w = log Z-hat_chain - log Z_0 (their spread says how well the chains agree)."""

    log_z: Tensor
    log_weights: Tensor


@torch.no_grad()
def ais_log_partition(b_v: Tensor, b_h: Tensor, W: Tensor, chains: int, betas: Tensor,
                      generator: torch.Generator | None = None) -> AISEstimate:  # fmt: skip
    """Annealed importance sampling of log Z for RBMs with biases b_v (N, D), b_h (N, K) and
    weights W (D, K) (Salakhutdinov & Murray 2008: their path p*_k = p*_A^(1-beta_k) p*_B^beta_k
    from a model A of independent visible units, here with A's visible biases the target's own,
    so that only the hidden terms are annealed):

        p*_beta(v) = exp(b_v . v) prod_j (1 + exp(beta (b_h + v W)_j)),
        Z_0 = Z_{beta=0} = 2^K prod_i (1 + exp(b_v_i)),   exactly;

    v_1 ~ p_0 exactly (independent Bernoulli(sigma(b_v))); for k = 1..S
    log w += log p*_{beta_k}(v_k) - log p*_{beta_{k-1}}(v_k), then v_{k+1} ~ T_{beta_k}(v_k) (one
    Gibbs round leaving p_{beta_k} invariant). E[w] = Z / Z_0, so
    log Z-hat = log Z_0 + log mean_m w_m (an unbiased Z-hat; log Z-hat is biased low by Jensen,
    the bias shrinking as chains and temperatures grow). The chains run in the inputs' dtype
    (float32 for a model: the sampling and the per-step terms); the log weights and log Z_0
    accumulate in float64."""
    N, D = b_v.shape
    K = b_h.shape[-1]
    log_z0 = F.softplus(b_v.double()).sum(-1) + K * math.log(2.0)  # (N,)
    bv, bh = b_v[:, None, :], b_h[:, None, :]  # (N, 1, D), (N, 1, K): broadcast over chains
    v = bernoulli(torch.sigmoid(bv).expand(N, chains, D).contiguous(), generator)
    log_w = torch.zeros(N, chains, dtype=torch.float64, device=b_v.device)
    for k in range(1, len(betas)):
        x = bh + v @ W  # (N, M, K)
        beta, prev = float(betas[k]), float(betas[k - 1])
        log_w += (F.softplus(beta * x) - F.softplus(prev * x)).sum(-1).double()
        if k < len(betas) - 1:
            h = bernoulli(torch.sigmoid(beta * x), generator)
            v = bernoulli(torch.sigmoid(bv + beta * (h @ W.t())), generator)
    log_z = log_z0 + torch.logsumexp(log_w, -1) - math.log(chains)
    return AISEstimate(log_z, log_w)


# --- the model --------------------------------------------------------------------------------
class ContrastiveCost(NamedTuple):
    """cost: sum over real frames of F_t(v_t) - F_t(v*_t), the CD-k surrogate whose gradient is
    the CD estimate of -grad log-likelihood; num_frames: how many frames it sums."""

    cost: Tensor
    num_frames: int

    @property
    def per_frame(self) -> Tensor:
        return self.cost / self.num_frames


class RNNRBM(nn.Module):
    """The RNN-RBM (module docstring). ``config`` describes the recurrent stack (cell,
    hidden_size, num_layers, dropout ...) and ``frame_size`` D; ``rbm_size`` K is the RBM's
    hidden units; ``gibbs_steps`` the Gibbs rounds that draw each frame in ``sample``.

    Parameters: ``rnn`` (the Recurrent over v_{t-1}), ``to_bv`` (W_uv and b_v), ``to_bh`` (W_uh and
    b_h), ``W`` (D, K). Initialisation: W ~ N(0, 0.01^2) (Hinton 2010's guide for RBMs), the bias
    projections torch's Linear default.
    """

    def __init__(self, config: ModelConfig, rbm_size: int = 150, gibbs_steps: int = 25) -> None:
        super().__init__()
        self.config, self.rbm_size, self.gibbs_steps = config, rbm_size, gibbs_steps
        D, H = config.frame_size, config.hidden_size
        self.rnn = make_recurrent(config, D)
        self.to_bv = nn.Linear(H, D)  # b_v + W_uv u
        self.to_bh = nn.Linear(H, rbm_size)  # b_h + W_uh u
        self.W = nn.Parameter(0.01 * torch.randn(D, rbm_size))

    def conditional_biases(self, x: Tensor, first_input: Tensor | None = None,
                           lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """b_v^t (B, T, D) and b_h^t (B, T, K) of every frame of x (B, T, D): the recurrent state
        over the frames before it (a zero frame, or ``first_input`` (B, D), before the first)."""
        u, _ = self.rnn(previous_frames(x, first_input), lengths=lengths)  # (B, T, H): u_{t-1}
        u = F.dropout(u, self.config.dropout, self.training)
        return self.to_bv(u), self.to_bh(u)

    def contrastive_cost(self, x: Tensor, lengths: Tensor, k: int,
                         generator: torch.Generator | None = None,
                         first_input: Tensor | None = None) -> ContrastiveCost:  # fmt: skip
        """CD-k (Hinton 2002) on every frame: v*_t from k Gibbs rounds started at v_t in the
        frame's RBM, then sum_t F_t(v_t) - F_t(v*_t) with v*_t a constant (the paper's
        training steps)."""
        b_v, b_h = self.conditional_biases(x, first_input, lengths)
        with torch.no_grad():
            v_neg = gibbs(x, b_v, b_h, self.W, k, generator)
        gap = free_energy(x, b_v, b_h, self.W) - free_energy(v_neg, b_v, b_h, self.W)  # (B, T)
        valid = frame_mask(x, lengths)
        return ContrastiveCost(torch.where(valid, gap, 0.0).sum(), int(lengths.sum()))

    @torch.no_grad()
    def ais_log_prob(self, x: Tensor, lengths: Tensor, chains: int, betas: Tensor,
                     generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """An estimate of log P(v_t | v_<t) = -F_t(v_t) - log Z_t for every real frame, log Z_t by
        AIS: x (B, T, D), lengths (B,) -> (N,) for the N real frames in order (float64).
        The frames' biases are computed once for the whole batch: keep batches to about a
        thousand frames (memory: frames x chains x K)."""
        b_v, b_h = self.conditional_biases(x, lengths=lengths)
        valid = frame_mask(x, lengths)
        v, b_v, b_h = x[valid], b_v[valid], b_h[valid]  # (N, D), (N, D), (N, K)
        log_z = ais_log_partition(b_v, b_h, self.W, chains, betas, generator).log_z
        return -free_energy(v.double(), b_v.double(), b_h.double(), self.W.double()) - log_z

    @torch.no_grad()
    def sample(self, num_frames: int, batch_size: int = 1,
               generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """Each frame drawn by ``gibbs_steps`` Gibbs rounds in its RBM, started from zeros (the
        paper's generation), then fed to the recurrence: (B, num_frames, D) in {0, 1}."""
        was_training = self.training
        self.eval()
        D = self.config.frame_size
        frame = self.W.new_zeros(batch_size, 1, D)
        state, frames = None, []
        for _ in range(num_frames):
            u, state = self.rnn(frame, state=state)
            b_v, b_h = self.to_bv(u), self.to_bh(u)
            frame = gibbs(torch.zeros_like(b_v), b_v, b_h, self.W, self.gibbs_steps, generator)
            frames.append(frame)
        self.train(was_training)
        return torch.cat(frames, dim=1)

    def rbm_parameters(self) -> list[nn.Parameter]:
        """W and the static biases b_v, b_h: what pretraining the RBM on single frames fits."""
        return [self.W, self.to_bv.bias, self.to_bh.bias]

    def pretrain_cost(self, frames: Tensor, k: int,
                      generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """CD-k on frames (N, D) taken alone, in the RBM of the static biases b_v, b_h (the
        paper initialises W, b_v, b_h from an RBM so trained): mean of F(v) - F(v*)."""
        b_v, b_h = self.to_bv.bias, self.to_bh.bias
        with torch.no_grad():
            v_neg = gibbs(frames, b_v, b_h, self.W, k, generator)
        return (free_energy(frames, b_v, b_h, self.W) - free_energy(v_neg, b_v, b_h, self.W)).mean()


def frame_mask(x: Tensor, lengths: Tensor) -> Tensor:
    """(B, T) True on the real frames of a padded batch x (B, T, D)."""
    T = x.shape[1]
    return torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
