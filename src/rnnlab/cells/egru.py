"""The event-based GRU, EGRU (Subramoney, Nazeer, Schöne, Mayr & Kappel, "Efficient recurrent
architectures through activity sparsity and sparse back-propagation through time", ICLR 2023).

A GRU whose units communicate only through events: a unit's internal state c integrates like a
GRU's, and the unit emits its value when c crosses a learned threshold theta, after which theta
is subtracted from c. Between events a unit's output is exactly zero, so the recurrent product
and the next layer see sparse inputs (activity sparsity). With rows u (update), r (reset), z
(candidate) of ``weight_ih`` (3H, I), ``bias`` (3H), ``weight_hh`` (3H, H) and ``bias_hh`` (3H):

    u_t = sigmoid(W_u x_t + b_u + R_u y_{t-1} + b'_u)
    r_t = sigmoid(W_r x_t + b_r + R_r y_{t-1} + b'_r)
    z_t = tanh(W_z x_t + b_z + r_t * (R_z y_{t-1} + b'_z))
    c^_t = u_t * c_{t-1} + (1 - u_t) * z_t
    e_t = H(c^_t - theta)                   (H(0) = 0)
    y_t = e_t * c^_t
    c_t = c^_t - e_t * theta

The recurrent input is the sparse output y_{t-1}; the leak uses c_{t-1}. theta (H) is trained,
clamped to [0, 1] where it is used. State: (y, c). This is the authors' code's form (EvNN,
``frameworks/pytorch/egru.py``: the reset applied after the recurrent product and its bias, as
in haste and cuDNN); the paper writes the same cell with u and 1 - u exchanged.

The Heaviside step has no useful derivative; training uses the paper's pseudo-derivative, a
triangle of peak ``dampening`` and half-width 1 / ``support`` around the threshold:

    d e_t / d c^_t := dampening * max(0, 1 - support * |c^_t - theta|)

so only units near their threshold (or that emitted an event, through y = e c^) pass a
gradient: the sparse backward pass. Initialisation as in the authors' code: ``weight_ih`` and
``weight_hh`` Xavier-normal over the whole stacked matrix, biases zero, theta drawn from
Beta(alpha, 3) with alpha = 3 m / (1 - m), so that its mean is m = ``thr_mean``.

Cell arguments: ``thr_mean`` (0.3), ``dampening`` (0.7), ``support`` (1.0), the EvNN defaults
(its language-model runs set dampening = support = 3.6). ``Recurrent.statistics()`` reports
``activity``, the fraction of (step, unit) pairs with an event: activity sparsity is 1 minus it.
Layer options: recurrent dropout (on y_{t-1} where it enters R); the step normalisations
(``norm``, rnnlab.cells.norms: N(W x) and N(R y) separately, each bias after its sum) and
quantised training (``quant_bits``: y = e c^ lies in [-1, 1]), both on the step loop; layer norm
and zoneout are refused (the paper's zoneout acts on c^ alone, not on the state parts as rnnlab's
does). On the
CPU a fused kernel (``rnnlab.kernels``, csrc/gru_like.cpp) runs the layer, pseudo-derivative
included; the step loop is its reference.

>>> import torch
>>> from rnnlab import Recurrent
>>> layer = Recurrent("egru", 3, 8)
>>> out, (y, c) = layer(torch.randn(5, 2, 3))
>>> 0.0 <= layer.statistics()["activity"] <= 1.0
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


class EventStep(torch.autograd.Function):
    """e = H(v) (H(0) = 0), with the pseudo-derivative dampening * max(0, 1 - support |v|)."""

    @staticmethod
    def forward(v: Tensor, dampening: float, support: float) -> Tensor:  # type: ignore[override]
        return (v > 0).to(v.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        v, dampening, support = inputs
        ctx.save_for_backward(v)
        ctx.dampening, ctx.support = dampening, support

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad * ctx.dampening * F.relu(1.0 - ctx.support * v.abs()), None, None


def event(v: Tensor, dampening: float, support: float) -> Tensor:
    """H(v) forward, the triangular pseudo-derivative backward."""
    return EventStep.apply(v, dampening, support)


class EGRUCell(Cell):
    """EGRU (see the module docstring)."""

    gate_rows = 3
    state_widths = (1, 1)  # y (sparse output), c (internal state)
    zoneout_parts = 0
    options_taken = frozenset({"recurrent_dropout", "norm", "quant_bits"})
    exact_gradient = False
    arguments = {
        "thr_mean": (0.3, "mean of the thresholds' Beta(alpha, 3) initialisation, in (0, 1)"),
        "dampening": (0.7, "peak of the pseudo-derivative"),
        "support": (1.0, "inverse half-width of the pseudo-derivative"),
    }
    tally_names = ("activity",)

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * H, H))
        self.bias = nn.Parameter(torch.zeros(3 * H))
        self.bias_hh = nn.Parameter(torch.zeros(3 * H))
        self.threshold = nn.Parameter(torch.empty(H))
        nn.init.xavier_normal_(self.weight_ih)
        nn.init.xavier_normal_(self.weight_hh)
        mean = self.arg("thr_mean")
        with torch.no_grad():
            beta = torch.distributions.Beta(torch.tensor(3.0 * mean / (1.0 - mean)),
                                            torch.tensor(3.0))  # fmt: skip
            self.threshold.copy_(beta.sample((H,)))
        self._make_step_norms({"ih": 3 * H, "hh": 3 * H})  # W x and R y, the biases after

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        if not 0.0 < args["thr_mean"] < 1.0:
            raise ConfigError(f"egru's thr_mean must lie in (0, 1), got {args['thr_mean']}")
        for name in ("dampening", "support"):
            if not (args[name] > 0 and math.isfinite(args[name])):
                raise ConfigError(f"egru's {name} must be positive, got {args[name]}")

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        y_prev, c_prev = state[:2]
        y_in = y_prev if recurrent_mask is None else y_prev * recurrent_mask
        n = None if self.step_norms is None else self._norm_step(state, valid)
        if n is None:
            ry = F.linear(y_in, self.weight_hh, self.bias_hh)
        else:  # rnnlab.cells.norms: N(W x) + b, N(R y) + b_h
            x_proj = n("ih", x_proj) + self.bias
            ry = n("hh", F.linear(y_in, self.weight_hh)) + self.bias_hh
        u_x, r_x, z_x = x_proj.chunk(3, dim=-1)
        u_h, r_h, z_h = ry.chunk(3, dim=-1)
        u = torch.sigmoid(u_x + u_h)
        r = torch.sigmoid(r_x + r_h)
        z = torch.tanh(z_x + r * z_h)
        c_hat = u * c_prev + (1.0 - u) * z
        theta = self.threshold.clamp(0.0, 1.0)
        e = event(c_hat - theta, self.arg("dampening"), self.arg("support"))
        new = (e * c_hat, c_hat - e * theta)
        return new if n is None else (*new, *n.end())

    def tally(self, state: State) -> tuple[Tensor, ...]:
        return ((state[0] != 0).to(state[0].dtype),)  # y = e c^ with c^ > theta >= 0 at events

    gpu_refusal = None
    gpu_options = frozenset({"recurrent_dropout"})  # the only layer option EGRU takes

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State, tuple[Tensor, ...]] | None:
        """The Triton kernels (rnnlab.kernels.gpu_gru_like), pseudo-derivative and activity
        tally included."""
        from rnnlab.kernels import gpu_gru_like

        if zone is not None:
            return None
        return gpu_gru_like.egru_sequence(self, x_proj, state, valid, recurrent_mask)

    def fused_sequence(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State, tuple[Tensor, ...]] | None:
        """The fused CPU kernel; the activity tally from its outputs, as the step's."""
        if not self._fused_available(x_proj):
            return None
        from rnnlab.kernels import cpu

        theta = self.threshold.clamp(0.0, 1.0)
        out, final = cpu.egru_sequence(x_proj, self.weight_hh, self.bias_hh, theta, state, valid,
                                       recurrent_mask, self.arg("dampening"),
                                       self.arg("support"))  # fmt: skip
        return out, final, ((out != 0).to(out.dtype),)
