"""S5, the simplified state-space layer (Smith, Warrington & Linderman, "Simplified State Space
Layers for Sequence Modeling", ICLR 2023): a multi-input, multi-output linear state-space model
with a diagonal complex state matrix, computed over a whole sequence by a parallel scan and step
by step for sampling.

With input u_t (I), complex state x_t (P = H here, the conjugate half of 2H states) and output
y_t (H), per step (zero-order hold):

    Lambda_bar = exp(Lambda * Delta),   B_bar = ((Lambda_bar - 1) / Lambda) * B~    (rows)
    x_t = Lambda_bar * x_{t-1} + B_bar u_t
    y_t = 2 Re(C~ x_t) + D u_t

Lambda = Lambda_re + i Lambda_im (P), Delta = exp(log_step) (P), B~ (P, I) and C~ (H, P)
complex, D the feed-through (a diagonal of H when I = H, as in the paper; a dense H x I matrix
otherwise). Only one of each conjugate pair of states is kept, hence the 2 Re(...). The
recurrence is linear with coefficients known for all steps, so ``fused_sequence`` computes it
with an associative scan, (a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j), in log2 T rounds
of elementwise complex products (Hillis & Steele), and ``step`` one step at a time (the
reference, and the form for sampling and streaming).

Initialisation as the authors' code (``lindermanlab/S5``, ``ssm_init.py``): Lambda from the
HiPPO-N matrix (the normal part of HiPPO-LegS, -1/2 I plus a skew-symmetric matrix) of 2H states,
diagonalised as -1/2 + i omega with omega and eigenvectors V from ``eigh`` of i times its skew
part, the first H of the 2H eigenvalues (one of each conjugate pair) kept; B~ = V^H B and
C~ = C V with B (2H, I) and C (H, 2H, real and imaginary parts) Lecun-normal; D ~ N(0, 1);
log_step ~ U(log 0.001, log 0.1). One HiPPO block (the authors allow several).

The S5 *layer* of the paper adds, around this cell, a GELU or GLU, a residual connection and a
batch or layer norm: those belong to the model, as dropout between layers does to ``Recurrent``.
State: (y, x_re, x_im). Layer options: none (no recurrent weights, so no recurrent dropout; the
state is complex, so zoneout and layer norm are refused).

>>> import torch
>>> from rnnlab import Recurrent
>>> layer = Recurrent("s5", 4, 8)
>>> out, (y, x_re, x_im) = layer(torch.randn(30, 2, 4))
>>> tuple(out.shape)
(30, 2, 8)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State


def hippo_n(n: int) -> tuple[Tensor, Tensor]:
    """Eigenvalues (n complex, ascending imaginary part) and eigenvectors (n x n) of the
    normal part of the HiPPO-LegS matrix: -1/2 I plus a skew-symmetric matrix."""
    k = torch.arange(n, dtype=torch.float64)
    root = torch.sqrt(2 * k + 1)
    skew = 0.5 * torch.outer(root, root)
    skew = torch.tril(skew, -1)
    skew = skew.t() - skew  # -1/2 sqrt((2n+1)(2k+1)) below the diagonal, + above
    omega, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    return torch.complex(torch.full((n,), -0.5, dtype=torch.float64), omega), V


def linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """x_t = a_t x_{t-1} + b_t with x_{-1} = 0, for all t at once (dimension 0): the
    Hillis-Steele scan of the pairs (a, b)."""
    T = a.shape[0]
    step = 1
    while step < T:
        b = torch.cat([b[:step], b[step:] + a[step:] * b[:-step]])
        a = torch.cat([a[:step], a[step:] * a[:-step]])
        step *= 2
    return b


class S5Cell(Cell):
    """S5's state-space model (see the module docstring)."""

    gpu_refusal = (
        "its parallel scan (fused_sequence) is PyTorch operations, which run on any "
        "device: O(log T) steps, no per-step product"
    )

    gate_rows = 3  # x_proj: Re(B_bar u), Im(B_bar u), D u
    state_widths = (1, 1, 1)
    zoneout_parts = 0
    recurrent_weights = False
    options_taken: frozenset[str] = frozenset()
    fused_kernel = False
    option_reasons = {
        "norm": "its paper normalises around the layer (the model's batch or layer norm), not "
        "inside the linear recurrence, whose state is complex",
        "quant_bits": "its output C x + D u is unbounded, and quantised outputs lie on [-1, 1]",
    }

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        H, I = hidden_size, input_size
        P2 = 2 * H  # the full state; one of each conjugate pair is kept
        lam, V = hippo_n(P2)
        keep = slice(0, H)
        self.lambda_re = nn.Parameter(lam.real[keep].float())
        self.lambda_im = nn.Parameter(lam.imag[keep].float())
        B = torch.randn(P2, I, dtype=torch.float64) / math.sqrt(P2)  # Lecun normal, fan-in 2P
        B_tilde = (V.conj().t() @ B.to(torch.complex128))[keep]
        self.b_re = nn.Parameter(B_tilde.real.float())
        self.b_im = nn.Parameter(B_tilde.imag.float())
        C = torch.complex(torch.randn(H, P2, dtype=torch.float64),
                          torch.randn(H, P2, dtype=torch.float64)) / math.sqrt(P2)  # fmt: skip
        C_tilde = (C @ V)[:, keep]
        self.c_re = nn.Parameter(C_tilde.real.float())
        self.c_im = nn.Parameter(C_tilde.imag.float())
        self.d = nn.Parameter(torch.randn(H) if I == H else torch.randn(H, I) / math.sqrt(I))
        self.log_step = nn.Parameter(torch.empty(H).uniform_(math.log(1e-3), math.log(1e-1)))

    def discrete(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Lambda_bar's real and imaginary parts (P) and B_bar's (P, I), by zero-order hold, in
        real arithmetic (so that an ONNX graph, which has no complex numbers, can hold it)."""
        step = torch.exp(self.log_step)
        magnitude = torch.exp(self.lambda_re * step)
        a_re = magnitude * torch.cos(self.lambda_im * step)
        a_im = magnitude * torch.sin(self.lambda_im * step)
        # (Lambda_bar - 1) / Lambda, then times B~ row by row
        norm = self.lambda_re.square() + self.lambda_im.square()
        f_re = ((a_re - 1) * self.lambda_re + a_im * self.lambda_im) / norm
        f_im = (a_im * self.lambda_re - (a_re - 1) * self.lambda_im) / norm
        b_re = f_re.unsqueeze(-1) * self.b_re - f_im.unsqueeze(-1) * self.b_im
        b_im = f_re.unsqueeze(-1) * self.b_im + f_im.unsqueeze(-1) * self.b_re
        return a_re, a_im, b_re, b_im

    def project_input(self, x: Tensor) -> Tensor:
        _, _, b_re, b_im = self.discrete()
        du = x * self.d if self.d.dim() == 1 else F.linear(x, self.d)
        return torch.cat([F.linear(x, b_re), F.linear(x, b_im), du], dim=-1)

    def _output(self, x_re: Tensor, x_im: Tensor, du: Tensor) -> Tensor:
        return 2.0 * (F.linear(x_re, self.c_re) - F.linear(x_im, self.c_im)) + du

    def step(self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None) -> State:
        _, x_re, x_im = state
        bu_re, bu_im, du = x_proj.chunk(3, dim=-1)
        a_re, a_im = self.discrete()[:2]
        new_re = a_re * x_re - a_im * x_im + bu_re
        new_im = a_re * x_im + a_im * x_re + bu_im
        return self._output(new_re, new_im, du), new_re, new_im

    def fused_sequence(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """The parallel scan over all steps; padded steps (a = 1, b = 0) keep the state."""
        bu_re, bu_im, du = x_proj.chunk(3, dim=-1)
        lam_bar = torch.complex(*self.discrete()[:2])
        T = x_proj.shape[0]
        a = lam_bar.expand(T, *bu_re.shape[1:])
        b = torch.complex(bu_re, bu_im)
        if valid is not None:
            v = valid.unsqueeze(-1)
            a = torch.where(v, a, torch.ones_like(a))
            b = torch.where(v, b, torch.zeros_like(b))
        x0 = torch.complex(state[1], state[2])
        b = torch.cat([b[:1] + a[:1] * x0, b[1:]])  # x_0's term enters at the first step
        x = linear_scan(a, b)  # (T, B, P) complex
        y = self._output(x.real, x.imag, du)
        out = y if valid is None else torch.where(valid.unsqueeze(-1), y, 0.0)
        if valid is None:
            last_y = y[-1]
        else:  # the output of each sequence's last valid step (the initial one if none)
            steps = valid.sum(0)  # (B,)
            index = (steps - 1).clamp_min(0).view(1, -1, 1).expand(1, *y.shape[1:])
            last_y = torch.where((steps > 0).unsqueeze(-1), y.gather(0, index)[0], state[0])
        return out, (last_y, x[-1].real, x[-1].imag)
