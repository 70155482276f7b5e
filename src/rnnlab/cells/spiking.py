"""Adaptive leaky integrate-and-fire units with surrogate gradients (Bittar & Garner, "A surrogate
gradient spiking baseline for speech command recognition", Frontiers in Neuroscience 2022):
``adlif`` (feed-forward input only) and ``radlif`` (with recurrent spikes).

Per neuron: a membrane potential u, an adaptation variable w and a spike s in {0, 1}. With
I_t = W x_t (no bias) and the threshold 1:

    w_t = beta * w_{t-1} + a * u_{t-1} + b * s_{t-1}
    u_t = alpha * (u_{t-1} - s_{t-1}) + (1 - alpha) * (I_t + V s_{t-1} - w_t)    (radlif; adlif
                                                                                  has no V s)
    s_t = H(u_t - 1)

w is updated first, from the previous u and s; the reset is soft, a spike's 1 subtracted inside
the leak. alpha, beta, a, b are trained per neuron and clamped, where used, to the ranges they
are drawn from: alpha in [exp(-1/5), exp(-1/25)] (membrane time constants of 5 to 25 steps),
beta in [exp(-1/30), exp(-1/120)] (30 to 120 steps), a in [-1, 1], b in [0, 2]. V (H, H) is
orthogonal at initialisation, its diagonal zeroed where used (a neuron does not feed itself);
W is torch's Linear initialisation. The spike's derivative is the authors' box-car surrogate:
d s / d u := 1 where -0.5 < u - 1 <= 0.5, else 0.

Below the threshold (no spikes) the state follows a linear map, (u, w)_t = M (u, w)_{t-1} +
(1 - alpha) (I_t, 0) with

    M = [[alpha - (1 - alpha) a, -(1 - alpha) beta], [a, beta]],   det M = alpha beta,
    det(1 - M) = (1 - alpha) (1 - beta + a).

A negative a (which the authors' range allows) with alpha and beta near 1 gives M an eigenvalue
above 1 when a < beta - 1 (about -0.01 to -0.03): e.g. alpha = 0.966, beta = 0.997, a = -0.93
gives 1.175, so u and w grow without bound, and over the ~300 steps of a CTC utterance they
overflowed float32 (their sequences are 1 s clips of 100 steps). The cell argument ``stable``
(rnnlab's addition, off by default) clamps a >= beta - 1, where det(1 - M) >= 0, det M < 1 and
0 < trace M < 2 keep every eigenvalue in [-1, 1].

As in the authors' code (``idiap/sparch``, ``snns.py``), including the batch normalisation of
I_t over the batch and the steps (``BatchNorm1d``, momentum 0.05; cell argument ``batch_norm``,
on by default: without it, torch's initialisation of W gives currents that rarely reach the
threshold, and a network that never spikes never learns), except the initial state, which is
zero (theirs draws u, w, s uniformly in [0, 1) at every forward pass). In training the
normalisation's statistics include padded steps (their inputs are zeros), as a batch norm over a
padded batch does. State: (s, u, w); the
output is the spike train. ``Recurrent.statistics()`` reports ``spike_rate``, the fraction of
(step, neuron) pairs with a spike. Layer options: recurrent dropout on s_{t-1} where it enters
V (``radlif``); the step normalisations (``norm``, rnnlab.cells.norms, on the step loop: W x, in
place of the authors' batch norm, and V s each normalised); quantised training (``quant_bits``: W
and V on their grids; the spikes, 0 or 1, are on the outputs' grid already); layer norm and
zoneout are refused. On the CPU a fused kernel (``rnnlab.kernels.ops_spiking``,
csrc/spiking.cpp) runs the layer, surrogate gradient included; the step loop
(``backend="step"``) is its reference.

>>> import torch
>>> from rnnlab import Recurrent
>>> layer = Recurrent("radlif", 3, 8)
>>> out, (s, u, w) = layer(torch.randn(20, 2, 3) * 3)
>>> bool(((out == 0) | (out == 1)).all())
True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State

ALPHA = (math.exp(-1 / 5), math.exp(-1 / 25))
BETA = (math.exp(-1 / 30), math.exp(-1 / 120))
A_RANGE = (-1.0, 1.0)
B_RANGE = (0.0, 2.0)


class BoxcarSpike(torch.autograd.Function):
    """s = 1[v > 0]; d s / d v := 1 on (-0.5, 0.5], 0 elsewhere."""

    @staticmethod
    def forward(v: Tensor) -> Tensor:  # type: ignore[override]
        return (v > 0).to(v.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad * ((v > -0.5) & (v <= 0.5)).to(grad.dtype)


class AdLIFCell(Cell):
    """adLIF (see the module docstring); ``recurrent`` adds the recurrent spikes V s (radlif)."""

    gate_rows = 1
    state_widths = (1, 1, 1)  # s, u, w
    zoneout_parts = 0
    recurrent_weights = False
    options_taken = frozenset({"norm", "quant_bits"})  # spikes lie on every grid
    exact_gradient = False
    tally_names = ("spike_rate",)
    norm_replaces = "batch_norm"
    recurrent = False
    gpu_refusal = None
    # Layer norm and zoneout the cells refuse; recurrent dropout (RadLIF) the kernels take.
    gpu_options: frozenset[str] = frozenset()
    arguments = {
        "batch_norm": (
            True,
            "batch-normalise W x over the batch and steps (the authors'; a norm takes its place)",
        ),
        "stable": (
            False,
            "keep a >= beta - 1, so that no subthreshold mode grows (not the authors')",
        ),
    }

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(H, input_size))
        nn.init.kaiming_uniform_(self.weight_ih, a=math.sqrt(5))  # torch's Linear
        self.alpha = nn.Parameter(torch.empty(H).uniform_(*ALPHA))
        self.beta = nn.Parameter(torch.empty(H).uniform_(*BETA))
        self.a = nn.Parameter(torch.empty(H).uniform_(*A_RANGE))
        self.b = nn.Parameter(torch.empty(H).uniform_(*B_RANGE))
        if self.recurrent:
            self.weight_hh = nn.Parameter(torch.empty(H, H))
            nn.init.orthogonal_(self.weight_hh)
        # A step normalisation (``norm``) takes the input batch norm's place, at W x.
        own = self.arg("batch_norm") and options.norm == "none"
        self.norm = nn.BatchNorm1d(H, momentum=0.05) if own else None
        self._make_step_norms({"ih": H, "hh": H} if self.recurrent else {"ih": H})

    def project_input(self, x: Tensor) -> Tensor:
        current = F.linear(x, self.weight_ih)  # no bias, as the authors' layers
        if self.norm is None:
            return current
        return self.norm(current.reshape(-1, self.hidden_size)).reshape(current.shape)

    def coefficients(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """alpha, beta, a, b (H each), clamped to their ranges (and a >= beta - 1 if stable)."""
        alpha = self.alpha.clamp(*ALPHA)
        beta = self.beta.clamp(*BETA)
        a = self.a.clamp(*A_RANGE)
        if self.arg("stable"):  # a >= beta - 1: the (u, w) map's spectral radius <= 1
            a = torch.maximum(a, beta - 1.0)
        return alpha, beta, a, self.b.clamp(*B_RANGE)

    def recurrent_matrix(self, like: Tensor) -> Tensor:
        """V (H, H): weight_hh with its diagonal zeroed (a neuron does not feed itself)."""
        eye = torch.eye(self.hidden_size, dtype=like.dtype, device=like.device)
        return self.weight_hh * (1.0 - eye)

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        s_prev, u_prev, w_prev = state[:3]
        n = None if self.step_norms is None else self._norm_step(state, valid)
        if n is not None:  # rnnlab.cells.norms: N(W x), and N(V s) below
            x_proj = n("ih", x_proj)
        alpha, beta, a, b = self.coefficients()
        w = beta * w_prev + a * u_prev + b * s_prev
        drive = x_proj - w
        if self.recurrent:
            s_in = s_prev if recurrent_mask is None else s_prev * recurrent_mask
            recurrent = F.linear(s_in, self.recurrent_matrix(s_in))
            drive = drive + (recurrent if n is None else n("hh", recurrent))
        u = alpha * (u_prev - s_prev) + (1.0 - alpha) * drive
        new = (BoxcarSpike.apply(u - 1.0), u, w)
        return new if n is None else (*new, *n.end())

    def tally(self, state: State) -> tuple[Tensor, ...]:
        return (state[0],)

    def fused_sequence(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State, tuple[Tensor, ...]] | None:
        """The fused CPU kernel (csrc/spiking.cpp); the clamps and V's zeroed diagonal stay here,
        under autograd. The spike-rate tally is the output spikes, as the step's. The kernel's
        backward takes each row's valid steps to be a prefix (what ``Recurrent``'s lengths
        give); a ``valid`` with a gap runs the step loop instead (checked in eager mode only: a
        data-dependent branch would break a compiled or exported graph, and ``Recurrent``, which
        makes the masks there, makes prefixes)."""
        if not self._fused_available(x_proj):
            return None
        if (
            valid is not None
            and not torch.compiler.is_compiling()
            and bool((valid[1:] & ~valid[:-1]).any())
        ):
            return None
        from rnnlab.kernels.ops_spiking import spiking_sequence

        V = self.recurrent_matrix(x_proj) if self.recurrent else None
        out, final = spiking_sequence(x_proj, self.coefficients(), V, state, valid,
                                      recurrent_mask)  # fmt: skip
        return out, final, (out,)

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State, tuple[Tensor, ...]] | None:
        """The Triton kernels (rnnlab.kernels.gpu_spiking): adLIF's time loop in one persistent
        kernel, RadLIF's a product and a kernel per step; the spike-rate tally as the CPU's."""
        if zone is not None:
            return None
        from rnnlab.kernels import gpu_spiking

        return gpu_spiking.spiking_sequence(self, x_proj, state, valid, recurrent_mask)


class RadLIFCell(AdLIFCell):
    """RadLIF: adLIF with recurrent spikes V s_{t-1} (V's diagonal zeroed)."""

    recurrent = True
    recurrent_weights = True
    options_taken = frozenset({"recurrent_dropout", "norm", "quant_bits"})
    gpu_options = frozenset({"recurrent_dropout"})
