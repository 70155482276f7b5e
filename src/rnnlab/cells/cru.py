"""The Continuous Recurrent Unit (Schirmer, Eltayeb, Lessmann & Rudolph, "Modeling Irregular Time
Series with Continuous Recurrent Units", ICML 2022): a continuous-discrete Kalman filter in a
latent space as the cell, for series observed at irregular times.

Step t reads observation t and the time ``gaps[t]`` from it to the step after it (the interval
the output looks ahead: in a next-step model, from the input's time stamp to the target's). The
state carries the prior belief at step t's time stamp: (b) update it with the observation,
(a) predict over gaps[t], (c) output a read-out of the prior at the next time stamp (the
authors' one-step-ahead output; cell argument ``output="posterior"``: of the posterior at step
t instead, their filtering output). This is the order of the authors' cell.

The latent state s (n = 2H: an observed half u and an unobserved half l, each H) follows a
locally linear stochastic differential equation between observations,

    ds = A s dt + dbeta,   A = sum_k alpha_k(mu) A_k,   alpha = softmax(W_c mu + b_c),

with K basis matrices A_k whose four H x H blocks are banded (entries with |i - j| <= b, the
bandwidth), mu the last posterior mean and beta a Brownian motion of diffusion Q = diag(q),
q = softplus(q_raw). In the order of a step:

(a) predict over dt = gaps[t] (the paper's eqs. 9-10, solved in closed form):

    mu^- = exp(A dt) mu^+,
    Sigma^- = exp(A dt) Sigma^+ exp(A dt)^T + int_0^dt e^{As} Q e^{A^T s} ds

  the integral by Van Loan's block exponential (the paper's appendix A.2.1):
  exp([[A, Q], [0, -A^T]] dt) = [[F, G], [0, .]], F = exp(A dt), and
  Sigma^- = F Sigma^+ F^T + G F^T.
  The f-CRU (cell argument ``fast``) has A = V diag(lambda) V^T with one learned orthogonal V
  (V = exp(S - S^T), S starting at 0) and eigenvalues lambda = sum_k alpha_k d_k; then
  exp(A dt) = V diag(e^{lambda dt}) V^T and, with Sigma_w = V^T Sigma^+ V, S_q = V^T Q V and
  D_ij = lambda_i + lambda_j, Sigma_w^- = S_q (e^{D dt} - 1) / D + Sigma_w e^{D dt} elementwise,
  Sigma^- = V Sigma_w^- V^T (Rome 1969; the paper's eqs. 21-26): no matrix exponential per step.

(b) update with the observation the input encodes (an observation model H = [I, 0], so only u is
observed): w_t = W_w x_t + b_w, r_t = elu(W_r x_t + b_r) + 1 (the observation's mean and
variance, H each), and with the covariance kept as three diagonals (upper c_u, lower c_l,
side c_s: Sigma = [[diag c_u, diag c_s], [diag c_s, diag c_l]], the paper's factorisation):

    q_u = c_u / (c_u + r),  q_l = c_s / (c_u + r)                       (Kalman gain)
    mu_u += q_u (w - mu_u),  mu_l += q_l (w - mu_u)
    c_u <- (1 - q_u) c_u,  c_l <- c_l - q_l c_s,  c_s <- (1 - q_u) c_s

  (after a prediction only the three diagonals of Sigma^-'s blocks are kept, as the authors do);

(c) output y_t = W_o [mu; log c_u; log c_l; c_s] + b_o (H units), a learned linear read-out
of the prior's (or posterior's) mean and log variances (the authors' decoder reads the same
mean and covariance parts; a read-out keeps every layer's width H, so layers stack).

The authors' code (boschresearch/Continuous-Recurrent-Units, lib/CRUCell.py, lib/CRULayer.py,
lib/encoder.py, run_experiment.py; read, not copied). Initialisation as theirs: basis matrices
zero (so A = 0 at first), coefficient net and encoder as torch's nn.Linear, q = 0.1
(``trans_covar``), f-CRU eigenvalues 1e-5 and V = I; their defaults K = 15 (``num_basis``),
b = 3 (``bandwidth``), no hidden layer in the coefficient net. Their encoder is a network ending
in an L2 normalisation; here it is the input projection (stack a layer or a model's encoder in
front for more). Their initial covariance is learned (10 at first); here the state is the prior
(y, mu, log c_u, log c_l, c_s), so the zero state is mean 0, unit variances, no correlation.
Variances are floored at 1e-20 before their logarithm (reached only from a state that is not a
covariance).

Nothing in the paper keeps A stable: over a long sequence (thousands of steps, as the series
family's evaluation reads) a mode with Re(eig) > 0 grows until float32 overflows. The cell
argument ``stable`` (rnnlab's addition, off by default) shifts A by the positive part of its
Gershgorin bound, A - relu(max_i (A_ii + sum_{j != i} |A_ij|)) I, and the f-CRU's eigenvalues
by their positive maximum, so that no mode grows (a conservative bound: it may damp a stable A).

Time gaps reach the cell through ``Recurrent.forward(x, gaps=...)`` (``takes_gaps``): the stack
appends them to the inputs as a last column, which ``project_input`` carries through to the step.
Without gaps every step is one time unit from the next (the authors' default too). Gaps should be of
order 1: scale time stamps (the authors' ``--ts``), since exp(A dt) is taken as it is.
Layer options: none (no layer norm, zoneout or recurrent dropout of a filter's state). The
matrix exponential has no ONNX operator, so export is refused.

>>> import torch
>>> from rnnlab import Recurrent
>>> layer = Recurrent("cru", 2, 4, cell_args={"num_basis": 3})
>>> out, state = layer(torch.randn(7, 3, 2), gaps=torch.rand(7, 3))
>>> tuple(out.shape), [tuple(s.shape) for s in state]
((7, 3, 4), [(1, 3, 4), (1, 3, 8), (1, 3, 4), (1, 3, 4), (1, 3, 4)])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State
from rnnlab.errors import ConfigError

VAR_FLOOR = 1e-20


def elu_plus_one(x: Tensor) -> Tensor:
    """exp(x) for x < 0, x + 1 otherwise: a positive variance (the authors' ``elup1``)."""
    return torch.where(x < 0, torch.exp(x.clamp_max(0.0)), x + 1.0)


def expm1_over(x: Tensor, t: Tensor) -> Tensor:
    """(e^{x t} - 1) / x elementwise, t at x = 0, without dividing by a small x."""
    z = x * t
    small = z.abs() < 1e-6
    ratio = torch.where(small, 1.0 + z / 2, torch.expm1(z) / torch.where(small, 1.0, z))
    return t * ratio


def band_indices(m: int, bandwidth: int) -> Tensor:
    """Flat indices into a 2m x 2m matrix of the entries of its four m x m blocks that lie within
    ``bandwidth`` of each block's diagonal, blocks in the order uu, ul, lu, ll."""
    i, j = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    near = (i - j).abs() <= bandwidth
    i, j = i[near], j[near]
    rows = torch.cat([i, i, i + m, i + m])
    cols = torch.cat([j, j + m, j, j + m])
    return rows * 2 * m + cols


class CRUCell(Cell):
    """The CRU and f-CRU (see the module docstring)."""

    gpu_refusal = (
        "the step loop by design: its time is the per-step matrix exponential and "
        "batched products, which run on the GPU as they are (docs/architecture.md)"
    )

    gate_rows = 2  # x_proj: the observation's mean w and variance pre-activation, then dt
    state_widths = (1, 2, 1, 1, 1)  # y, mu (u and l), log c_u, log c_l, c_s
    zoneout_parts = 0
    options_taken: frozenset[str] = frozenset()
    fused_kernel = False
    option_reasons = {
        "norm": "its state is a Gaussian belief that Kalman's equations update: a batch or "
        "window statistic inside them would no longer make it a filter",
        "quant_bits": "its linear read-out is unbounded, and quantised outputs lie on [-1, 1]",
    }
    takes_gaps = True
    onnx_refusal = "the CRU's matrix exponential has no ONNX operator"
    arguments = {
        "num_basis": (15, "K, the number of basis matrices A_k mixed by the state"),
        "bandwidth": (3, "b: entries of each block of A_k within b of its diagonal are free"),
        "trans_covar": (0.1, "initial diffusion variance q of the latent SDE"),
        "fast": (False, "f-CRU: A = V diag(lambda) V^T with a learned orthogonal V"),
        "output": (
            "prior",
            "read out the prior at the next time stamp (prior) or the "
            "posterior at the step's own (posterior)",
        ),
        "stable": (False, "shift A so that no mode grows (Gershgorin bound; not the paper's)"),
    }

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        if not 1 <= args["num_basis"] <= 1024:
            raise ConfigError(f"cru's num_basis must lie in [1, 1024], got {args['num_basis']}")
        if not 0 <= args["bandwidth"] <= 2**20:
            raise ConfigError(f"cru's bandwidth must be 0 or more, got {args['bandwidth']}")
        if not args["trans_covar"] > 0:
            raise ConfigError(f"cru's trans_covar must be positive, got {args['trans_covar']}")
        if args["output"] not in ("prior", "posterior"):
            raise ConfigError(f"cru's output must be prior or posterior, got {args['output']!r}")

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        H, I = hidden_size, input_size
        n, K = 2 * H, self.arg("num_basis")
        self.fast = bool(self.arg("fast"))
        self.weight_ih = nn.Parameter(torch.empty(2 * H, I))  # rows: w, then r's pre-activation
        self.bias = nn.Parameter(torch.empty(2 * H))
        self.trans_weight = nn.Parameter(torch.empty(K, n))  # the coefficient net alpha(mu)
        self.trans_bias = nn.Parameter(torch.empty(K))
        self.weight_out = nn.Parameter(torch.empty(H, 5 * H))  # the read-out
        self.bias_out = nn.Parameter(torch.empty(H))
        for weight, bias, fan_in in ((self.weight_ih, self.bias, I),
                                     (self.trans_weight, self.trans_bias, n),
                                     (self.weight_out, self.bias_out, 5 * H)):  # fmt: skip
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)
        q = float(self.arg("trans_covar"))
        self.diffusion_raw = nn.Parameter(torch.full((n,), math.log(math.expm1(q))))
        if self.fast:
            self.eigen_basis = nn.Parameter(torch.full((K, n), 1e-5))  # d_k
            self.skew = nn.Parameter(torch.zeros(n, n))  # V = exp(S - S^T)
        else:
            index = band_indices(H, self.arg("bandwidth"))
            self.register_buffer("band_index", index, persistent=False)
            self.basis = nn.Parameter(torch.zeros(K, len(index)))  # the A_k's band entries

    def project_input(self, x: Tensor) -> Tensor:
        """(..., I + 1) inputs with the gap last -> (..., 2H + 1): w, r's pre-activation, dt."""
        return torch.cat([F.linear(x[..., :-1], self.weight_ih, self.bias), x[..., -1:]], -1)

    # --- the pieces of a step, each usable on its own (tests, analysis) ------------------------
    def diffusion(self) -> Tensor:
        """q (2H,), the diagonal of Q."""
        return F.softplus(self.diffusion_raw)

    def coefficients(self, mu: Tensor) -> Tensor:
        """alpha (B, K): softmax of the coefficient net at the posterior mean."""
        return torch.softmax(F.linear(mu, self.trans_weight, self.trans_bias), dim=-1)

    def transition(self, mu: Tensor) -> Tensor:
        """A (B, 2H, 2H) = sum_k alpha_k(mu) A_k (the CRU; not the f-CRU)."""
        n = mu.shape[-1]
        entries = self.coefficients(mu) @ self.basis  # (B, E)
        flat = entries.new_zeros(mu.shape[0], n * n)
        index: Tensor = self.band_index  # type: ignore[assignment]
        flat = flat.scatter(1, index.expand(mu.shape[0], -1), entries)
        A = flat.view(-1, n, n)
        if self.arg("stable"):  # Re(eig) <= max_i (A_ii + sum_{j != i} |A_ij|) (Gershgorin)
            diag = A.diagonal(dim1=-2, dim2=-1)
            bound = (diag + A.abs().sum(-1) - diag.abs()).amax(-1)
            A = A - torch.relu(bound)[:, None, None] * torch.eye(n, dtype=A.dtype, device=A.device)
        return A

    def eigenvectors(self) -> Tensor:
        """V (2H, 2H), orthogonal: exp(S - S^T) (the f-CRU)."""
        return torch.linalg.matrix_exp(self.skew - self.skew.t())

    def predict(
        self, mu: Tensor, cu: Tensor, cl: Tensor, cs: Tensor, dt: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(a): the prior mean (B, 2H) and covariance diagonals (B, H each) dt (B,) later."""
        H = cu.shape[-1]
        q = self.diffusion()
        t = dt[:, None, None]
        if self.fast:
            V = self.eigenvectors()
            lam = self.coefficients(mu) @ self.eigen_basis  # (B, 2H)
            if self.arg("stable"):
                lam = lam - torch.relu(lam.amax(-1, keepdim=True))
            mean = (torch.exp(lam * dt[:, None]) * (mu @ V)) @ V.t()
            Vu, Vl = V[:H], V[H:]  # Sigma_w = V^T Sigma V with Sigma from its diagonals
            sigma_w = (Vu.t() * cu[:, None]) @ Vu + (Vl.t() * cl[:, None]) @ Vl
            side = (Vu.t() * cs[:, None]) @ Vl
            sigma_w = sigma_w + side + side.transpose(-1, -2)
            s_q = (V.t() * q) @ V
            D = lam[:, :, None] + lam[:, None, :]
            sigma_w = s_q * expm1_over(D, t) + sigma_w * torch.exp(D * t)
            VS = V @ sigma_w  # (B, 2H, 2H); Sigma^- = VS V^T, of which three diagonals
            full = (VS * V).sum(-1)
            side_diag = (VS[:, :H] * V[H:]).sum(-1)
        else:
            A = self.transition(mu)
            n = 2 * H
            zero = A.new_zeros(A.shape)
            block = torch.cat([torch.cat([A, torch.diag_embed(q.expand(A.shape[0], n))], -1),
                               torch.cat([zero, -A.transpose(-1, -2)], -1)], -2)  # fmt: skip
            E = torch.linalg.matrix_exp(block * t)
            Fm, G = E[:, :n, :n], E[:, :n, n:]
            mean = (Fm @ mu.unsqueeze(-1)).squeeze(-1)
            # F Sigma for Sigma = [[diag cu, diag cs], [diag cs, diag cl]], columns scaled
            left, right = Fm[..., :H], Fm[..., H:]
            FS = torch.cat([left * cu[:, None] + right * cs[:, None],
                            left * cs[:, None] + right * cl[:, None]], -1)  # fmt: skip
            X = FS + G  # Sigma^- = X F^T
            full = (X * Fm).sum(-1)
            side_diag = (X[:, :H] * Fm[:, H:]).sum(-1)
        return mean, full[:, :H], full[:, H:], side_diag

    @staticmethod
    def update(
        mu: Tensor, cu: Tensor, cl: Tensor, cs: Tensor, w: Tensor, r: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(b): the Kalman update with observation mean w and variance r (B, H) of mu's first
        half."""
        H = w.shape[-1]
        denominator = cu + r
        q_u, q_l = cu / denominator, cs / denominator
        residual = w - mu[:, :H]
        mean = mu + torch.cat([q_u * residual, q_l * residual], -1)
        keep = r / denominator  # 1 - q_u
        return mean, cu * keep, cl - q_l * cs, cs * keep

    def readout(self, mu: Tensor, cu: Tensor, cl: Tensor, cs: Tensor) -> Tensor:
        """(c): y (B, H) from the posterior."""
        log_u = cu.clamp_min(VAR_FLOOR).log()
        log_l = cl.clamp_min(VAR_FLOOR).log()
        return F.linear(torch.cat([mu, log_u, log_l, cs], -1), self.weight_out, self.bias_out)

    def step(self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None) -> State:
        H = self.hidden_size
        w, r_raw, dt = x_proj[:, :H], x_proj[:, H : 2 * H], x_proj[:, 2 * H]
        _, mu, log_u, log_l, cs = state
        posterior = self.update(mu, log_u.exp(), log_l.exp(), cs, w, elu_plus_one(r_raw))
        mu, cu, cl, cs = self.predict(*posterior, dt)
        cu, cl = cu.clamp_min(VAR_FLOOR), cl.clamp_min(VAR_FLOOR)
        shown = posterior if self.arg("output") == "posterior" else (mu, cu, cl, cs)
        return self.readout(*shown), mu, cu.log(), cl.log(), cs
