"""GateL0RD (Gumbsch, Butz & Martius, "Sparsely changing latent states for prediction and
planning in partially observable domains", NeurIPS 2021).

A latent state h that changes only when a gate opens, with an L0 penalty on the openings, so
that the network learns to keep its latent constant unless something in the world changed.
With x_t the input and one internal layer (the authors' default), per step:

    s_t = W_g x_t + R_g h_{t-1} + b_g - eps_t,   eps_t ~ N(0, sigma^2) in training, 0 otherwise
    L_t = ReTanh(s_t) = max(0, tanh(s_t))                                     (the gate)
    h^_t = tanh(W_r x_t + R_r h_{t-1} + b_r)                                  (recommendation)
    h_t = L_t * h^_t + (1 - L_t) * h_{t-1}
    y_t = tanh(W_p x_t + R_p h_t + b_p) * sigmoid(W_o x_t + R_o h_t + b_o)    (output, gate)

The output reads the new latent h_t. Where s_t <= 0 the latent is copied exactly. The penalty
is lambda times the mean over steps, units (and cells of the stack) of Theta(L_t), the Heaviside
step of the gate (1 where the latent changes), with the straight-through gradient
d Theta / d L := 1 of the paper (so it pushes open gates shut and leaves shut ones alone).

Layout: ``weight_ih`` (4H, I) rows g, r, p, o; ``bias`` (4H); ``weight_hh`` (2H, H) rows g, r
(from h_{t-1}); ``weight_hn`` (2H, H) rows p, o (from h_t). Each of g, r, p, o is one
``nn.Linear`` over [x; h] in the authors' code, so every weight and bias is initialised as
torch's Linear: U(-1/sqrt(I + H), 1/sqrt(I + H)). The output has the latent's width H here (the
authors allow another). State: (y, h, L): L, the last gate, is kept so that ``tally`` can read
it; it never enters the next step. Deeper internal networks (the authors'
``num_layers_internal`` > 1) are not offered.

Cell arguments: ``l0_lambda`` (0.001, the paper's setting for its billiard-ball and robot
tasks) and ``gate_noise`` (sigma = 0.1). ``Recurrent.statistics()`` reports ``gate_openings``,
the fraction of (step, unit) pairs whose latent changed; ``Recurrent.penalty()`` is the L0 term.
Layer options: the step normalisations (``norm``, rnnlab.cells.norms: W x, R_{g,r} h_{t-1} and
R_{p,o} h_t each normalised, the bias after their sum) and quantised training (``quant_bits``:
y = tanh(.) sigmoid(.) lies in [-1, 1]), both on the step loop; layer norm, zoneout and
recurrent dropout are refused (the cell's own gate is the regulariser; its recurrent input is h,
not the output y that rnnlab's masks act on).

On the CPU a fused kernel (``rnnlab.kernels``, csrc/gru_like.cpp) runs the latent recurrence
(h_t and L_t, one product with R_g, R_r per step); y_t reads h_t but never feeds back, so it is
formed for all steps at once after the loop, one large product with R_p, R_o. The training
noise is drawn here, step by step from torch's generator as the step loop draws it, so both
paths compute the same under one seed.

>>> import torch
>>> from rnnlab import Recurrent
>>> layer = Recurrent("gatel0rd", 3, 8)
>>> out, (y, h, gate) = layer(torch.randn(5, 2, 3))
>>> bool(layer.penalty() >= 0)
True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State
from rnnlab.errors import ConfigError


class GateL0RDCell(Cell):
    """GateL0RD (see the module docstring)."""

    gate_rows = 4
    state_widths = (1, 1, 1)  # y, h, the step's gate L
    zoneout_parts = 0
    options_taken = frozenset({"norm", "quant_bits"})
    noisy_in_training = True
    arguments = {
        "l0_lambda": (0.001, "weight of the L0 penalty on latent changes"),
        "gate_noise": (0.1, "std of the Gaussian noise on the gate's input in training"),
    }
    tally_names = ("gate_openings",)

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(2 * H, H))
        self.weight_hn = nn.Parameter(torch.empty(2 * H, H))
        self.bias = nn.Parameter(torch.empty(4 * H))
        bound = 1.0 / math.sqrt(input_size + H)
        with torch.no_grad():
            for p in (self.weight_ih, self.weight_hh, self.weight_hn, self.bias):
                p.uniform_(-bound, bound)
        self._make_step_norms({"ih": 4 * H, "hh": 2 * H, "hn": 2 * H})

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        for name in ("l0_lambda", "gate_noise"):
            if args[name] < 0:
                raise ConfigError(f"gatel0rd's {name} must be at least 0, got {args[name]}")

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        h_prev = state[1]
        n = None if self.step_norms is None else self._norm_step(state, valid)
        rh = F.linear(h_prev, self.weight_hh)
        if n is not None:  # rnnlab.cells.norms; the bias after the normalised sums
            x_proj = n("ih", x_proj) + self.bias
            rh = n("hh", rh)
        g_x, r_x, p_x, o_x = x_proj.chunk(4, dim=-1)
        g_h, r_h = rh.chunk(2, dim=-1)
        s = g_x + g_h
        sigma = self.arg("gate_noise")
        if self.training and sigma > 0:
            s = s - sigma * torch.randn_like(s)
        gate = F.relu(torch.tanh(s))
        h = gate * torch.tanh(r_x + r_h) + (1.0 - gate) * h_prev
        hn = F.linear(h, self.weight_hn)
        p_h, o_h = (hn if n is None else n("hn", hn)).chunk(2, dim=-1)
        y = torch.tanh(p_x + p_h) * torch.sigmoid(o_x + o_h)
        return (y, h, gate) if n is None else (y, h, gate, *n.end())

    def tally(self, state: State) -> tuple[Tensor, ...]:
        return (_openings(state[2]),)

    def penalty(self, means: dict[str, Tensor]) -> Tensor | None:
        return self.arg("l0_lambda") * means["gate_openings"]

    gpu_refusal = None
    # GateL0RD takes none of the layer options recurrent_dropout, zoneout and layer_norm.
    gpu_options: frozenset[str] = frozenset()

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State, tuple[Tensor, ...]] | None:
        """The latent on the Triton kernels (rnnlab.kernels.gpu_gru_like), the outputs of all
        steps after it, as ``fused_sequence`` forms them; the noise drawn as it draws it."""
        from rnnlab.kernels import gpu_gru_like

        refused = zone is not None or recurrent_mask is not None or self.step_norms is not None
        if refused or not gpu_gru_like.available():  # checked before the noise is drawn
            return None
        y0, h0, L0 = state
        H = self.hidden_size
        sigma = self.arg("gate_noise")
        noise = None
        if self.training and sigma > 0:  # one draw per step, in the step loop's order
            noise = torch.stack([sigma * torch.randn_like(h0) for _ in range(x_proj.shape[0])])
        h, gate = gpu_gru_like.gatel0rd_latent(
            x_proj[..., : 2 * H], self.weight_hh, h0, L0, noise, valid
        )
        p_x, o_x = x_proj[..., 2 * H :].chunk(2, dim=-1)
        p_h, o_h = F.linear(h, self.weight_hn).chunk(2, dim=-1)
        y = torch.tanh(p_x + p_h) * torch.sigmoid(o_x + o_h)  # (T, B, H)
        if valid is None:
            return y, (y[-1], h[-1], gate[-1]), (_openings(gate),)
        lengths = valid.sum(0)  # (B,): the final y is that of each row's last valid step
        last = (lengths - 1).clamp_min(0).view(1, -1, 1).expand(1, -1, H)
        y_T = torch.where((lengths > 0).unsqueeze(-1), y.gather(0, last)[0], y0)
        return torch.where(valid.unsqueeze(-1), y, 0.0), (y_T, h[-1], gate[-1]), (_openings(gate),)

    def fused_sequence(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State, tuple[Tensor, ...]] | None:
        """The latent on the fused CPU kernel, the outputs of all steps after it."""
        if not self._fused_available(x_proj):
            return None
        from rnnlab.kernels import cpu

        y0, h0, L0 = state
        H = self.hidden_size
        sigma = self.arg("gate_noise")
        noise = None
        if self.training and sigma > 0:  # one draw per step, in the step loop's order
            noise = torch.stack([sigma * torch.randn_like(h0) for _ in range(x_proj.shape[0])])
        h, gate = cpu.gatel0rd_latent(x_proj[..., : 2 * H], self.weight_hh, h0, L0, noise, valid)
        p_x, o_x = x_proj[..., 2 * H :].chunk(2, dim=-1)
        p_h, o_h = F.linear(h, self.weight_hn).chunk(2, dim=-1)
        y = torch.tanh(p_x + p_h) * torch.sigmoid(o_x + o_h)  # (T, B, H)
        if valid is None:
            return y, (y[-1], h[-1], gate[-1]), (_openings(gate),)
        # Padded steps output zero; the final y is that of each row's last valid step.
        lengths = valid.sum(0)  # (B,)
        last = (lengths - 1).clamp_min(0).view(1, -1, 1).expand(1, -1, H)
        y_T = torch.where((lengths > 0).unsqueeze(-1), y.gather(0, last)[0], y0)
        return torch.where(valid.unsqueeze(-1), y, 0.0), (y_T, h[-1], gate[-1]), (_openings(gate),)


def _openings(gate: Tensor) -> Tensor:
    """Theta(L): 1 where the latent changes, with the straight-through gradient to L."""
    opened = (gate > 0).to(gate.dtype)
    return gate + (opened - gate).detach()
