"""The ARMA cell (Schiele, Berninger & Rügamer, "ARMA cell: a modular and effective approach for
neural autoregressive modeling", 2022): an autoregressive moving-average model of a (vector)
series as a recurrent cell, whose state is its own past predictions.

At step t the cell sees z_t (k values) and predicts z_{t+1}; with p autoregressive and q
moving-average lags, k x k matrices A_1..A_p, B_1..B_q (row vectors times matrices) and an
optional bias c:

    y_t = f( sum_{i=1..p} z_{t-i+1} A_i + sum_{j=1..q} m_{t-j+1} B_j + c )
    m_s = yhat_s - z_s   where the lag s is beyond the AR terms (j > p)
    m_s = yhat_s         where it is not (j <= p: its z_s is folded into A_j)

yhat_s being the cell's prediction of z_s (its output one step before s). With residuals
e = z - yhat, a classical ARMA(p, q), z_{t+1} = sum beta_i z_{t-i+1} + sum gamma_j e_{t-j+1},
is the cell with A_i = beta_i + gamma_i (i <= q) and B_j = -gamma_j: so gamma = -B and
beta = A + B (for the lags both have). f is the identity (the authors' default) or tanh
(cell argument ``tanh``).

The series is z_t = x_t where ``input_size`` equals ``hidden_size`` (k = H: the authors' cell
with one unit); otherwise z_t = W x_t, a learned projection to H channels (no bias,
U(-1/sqrt(I), 1/sqrt(I))), and the cell is an ARMA model of those features. The authors' several
units per cell are not offered (one unit per cell; stack or widen instead).

Layout: ``ar`` (p, H, H) and ``ma`` (q, H, H), U(-0.05, 0.05) as the authors' Keras "uniform";
``ma_bias`` (H, the c above) zeros, present only with the cell argument ``bias``. State: the q
latest predictions (yhat_{t+1} first: the output) and the m - 1 latest inputs, m = max(p, q),
each (B, H). Cell
arguments: ``p`` (2), ``q`` (1), ``tanh`` (False), ``bias`` (False). Layer options: none (its
state is its own predictions and inputs: dropout or zoneout of them would make another model).

>>> import torch
>>> from rnnlab import Recurrent
>>> layer = Recurrent("arma", 1, 1, cell_args={"p": 2, "q": 1})
>>> out, state = layer(torch.randn(20, 3, 1))
>>> len(state)  # q predictions and max(p, q) - 1 inputs
2
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State
from rnnlab.errors import ConfigError


class ARMACell(Cell):
    """The ARMA cell (see the module docstring)."""

    gate_rows = 2  # x_proj: z_t A_1 (+ c), and z_t itself (the lags keep it)
    zoneout_parts = 0
    recurrent_weights = False
    options_taken: frozenset[str] = frozenset()
    fused_kernel = False
    option_reasons = {
        "norm": "its state is its own predictions and inputs, a linear model of the series: "
        "normalising them per step would make another model",
        "quant_bits": "its predictions are unbounded (a linear model of the series), and "
        "quantised outputs lie on [-1, 1]",
    }
    arguments = {
        "p": (2, "autoregressive lags"),
        "q": (1, "moving-average lags (the cell's own past predictions)"),
        "tanh": (False, "tanh on the prediction (else linear, the authors' default)"),
        "bias": (False, "a bias c"),
    }

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        H = hidden_size
        self.p, self.q = int(self.arg("p")), int(self.arg("q"))
        self.lags = max(self.p, self.q)
        self.state_widths = (1,) * (self.q + self.lags - 1)
        self.ar = nn.Parameter(torch.empty(self.p, H, H).uniform_(-0.05, 0.05))
        self.ma = nn.Parameter(torch.empty(self.q, H, H).uniform_(-0.05, 0.05))
        self.ma_bias: nn.Parameter | None = (
            nn.Parameter(torch.zeros(H)) if self.arg("bias") else None
        )
        if input_size != H:
            bound = 1.0 / math.sqrt(input_size)
            self.weight_ih = nn.Parameter(torch.empty(H, input_size).uniform_(-bound, bound))

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        if not 1 <= args["p"] <= 64 or not 1 <= args["q"] <= 64:
            raise ConfigError(f"arma's p and q must lie in [1, 64], got p={args['p']}, "
                              f"q={args['q']}")  # fmt: skip

    def project_input(self, x: Tensor) -> Tensor:
        z = F.linear(x, self.weight_ih) if self.input_size != self.hidden_size else x
        ar1 = z @ self.ar[0]
        if self.ma_bias is not None:
            ar1 = ar1 + self.ma_bias
        return torch.cat([ar1, z], dim=-1)

    def step(self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None) -> State:
        ar1, z = x_proj.chunk(2, dim=-1)
        preds, past = state[: self.q], state[self.q :]  # yhat_t.., z_{t-1}..
        inputs = (z, *past)  # inputs[i] = z_{t-i}
        total = ar1
        for i in range(1, self.p):
            total = total + inputs[i] @ self.ar[i]
        for j in range(self.q):
            m = preds[j] - inputs[j] if j >= self.p else preds[j]
            total = total + m @ self.ma[j]
        y = torch.tanh(total) if self.arg("tanh") else total
        return (y, *preds[: self.q - 1], *inputs[: self.lags - 1])
