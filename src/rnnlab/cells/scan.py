"""Parallel-scan cells of Feng et al. 2024 ("Were RNNs All We Needed?"): minGRU and minLSTM.

Their gates depend on the input only, so h_t = a_t * h_{t-1} + b_t is a linear recurrence whose
coefficients are known for all steps at once. ``step`` computes it step by step (the reference
and the form for sampling); ``fused_sequence`` computes all steps with a parallel scan in log
space (Feng et al., sec. 3 and appendix; Heinsen 2023):

    h_t = exp(A_t) h_0 + exp(A_t + logcumsumexp_{s <= t}(log b_s - A_s)),
    A_t = sum_{s <= t} log a_s.
 The candidate goes through g(x) = x + 1/2 for x >= 0 and
sigmoid(x) below, which keeps it positive so that its logarithm exists.

- ``mingru``: rows z, h of ``weight_ih`` (2H, I) and ``bias`` (2H);
  z_t = sigmoid(k_z), h_t = (1 - z_t) h_{t-1} + z_t g(k_h).
- ``minlstm``: rows f, i, h (3H, I); f'_t = f_t / (f_t + i_t), i'_t = i_t / (f_t + i_t) with
  f_t = sigmoid(k_f), i_t = sigmoid(k_i); h_t = f'_t h_{t-1} + i'_t g(k_h).

Weights U(-1/sqrt(H), 1/sqrt(H)), biases zero. There are no recurrent weights, so variational
recurrent dropout does not apply. Layer options: layer norm and zoneout (on the kernel), the step
normalisations (``norm``, rnnlab.cells.norms: W x normalised, the bias after; on the step loop);
quantised training is refused (g's candidate, hence h, is unbounded above). The scan keeps h_0's
term, exp(A_t) h_0, out of the log-space sum, so any initial state works.

>>> import torch
>>> from rnnlab import Recurrent
>>> out, (h,) = Recurrent("minlstm", 3, 4)(torch.randn(5, 2, 3))
>>> tuple(out.shape)
(5, 2, 4)
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State

_LOG_ZERO = -1e30  # stands for log 0 in the scan


def g(x: Tensor) -> Tensor:
    """The positive candidate activation of Feng et al.: x + 1/2 for x >= 0, sigmoid(x) below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x), computed without forming g(x) for large negative x."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class ScanCell(Cell):
    """A cell with input-only gates: h_t = a_t h_{t-1} + b_t (see the module docstring)."""

    gpu_refusal = (
        "its parallel scan (fused_sequence) is PyTorch operations, which run on any "
        "device: O(log T) steps, no per-step product"
    )

    state_widths = (1,)
    zoneout_parts = 1
    recurrent_weights = False
    options_taken = frozenset({"layer_norm", "zoneout", "norm"})
    option_reasons = {"quant_bits": "its candidate g(x) = x + 1/2 (x >= 0), hence its output, is "
                      "unbounded, and quantised outputs lie on [-1, 1]"}  # fmt: skip
    scan_kind: int  # which cell the fused CPU kernel computes (csrc/scan.cpp)

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        rows = self.gate_rows * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.bias = nn.Parameter(torch.zeros(rows))
        self._uniform_(self.weight_ih)
        if options.layer_norm:
            self.ln_ih_weight = nn.Parameter(torch.ones(rows))
        self._make_step_norms({"ih": rows})

    @abstractmethod
    def log_coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        """log a_t and log b_t from the input projection."""

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        n = None if self.step_norms is None else self._norm_step(state, valid)
        if n is not None:  # rnnlab.cells.norms; the bias after the normalisation
            x_proj = n("ih", x_proj) + self.bias
        log_a, log_b = self.log_coefficients(x_proj)
        h = torch.exp(log_a) * state[0] + torch.exp(log_b)
        return (h,) if n is None else (h, *n.end())

    def fused_sequence(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State] | None:
        if recurrent_mask is not None or self.step_norms is not None:
            return None
        h0 = state[0]
        if x_proj.device.type == "cpu":
            from rnnlab.kernels import cpu

            if cpu.available():
                # On a CPU the exact sequential recurrence beats the log-space scan; the kernel
                # computes a_t and b_t from x_proj inside it and keeps only the states.
                h, h_last = cpu.gated_scan(x_proj, h0, valid, self.scan_kind)
                out = h if valid is None else torch.where(valid.unsqueeze(-1), h, 0.0)
                return out, (h_last,)
        log_a, log_b = self.log_coefficients(x_proj)  # (T, B, H) each
        return self.log_space_scan(log_a, log_b, h0, valid)

    @staticmethod
    def log_space_scan(
        log_a: Tensor, log_b: Tensor, h0: Tensor, valid: Tensor | None
    ) -> tuple[Tensor, State]:
        """The parallel scan in log space (for accelerators, and where no extension is built)."""
        if valid is not None:  # padded steps: a = 1, b = 0, so the state carries over
            v = valid.unsqueeze(-1)
            log_a = torch.where(v, log_a, 0.0)
            # A very negative finite log b rather than -inf: logcumsumexp's gradient stays finite
            # even over a sequence with no valid step.
            log_b = torch.where(v, log_b, _LOG_ZERO)
        A = torch.cumsum(log_a, dim=0)
        # h_0's term is kept out of the log-space sum, so h_0 may be zero or negative.
        h = torch.exp(A) * h0 + torch.exp(A + torch.logcumsumexp(log_b - A, dim=0))  # (T, B, H)
        out = h if valid is None else torch.where(valid.unsqueeze(-1), h, 0.0)
        return out, (h[-1],)


class MinGRUCell(ScanCell):
    """minGRU (Feng et al. 2024, sec. 3.1): z_t = sigmoid(k_z),
    h_t = (1 - z_t) h_{t-1} + z_t g(k_h)."""

    gate_rows = 2
    scan_kind = 0  # the fused CPU kernel's minGRU

    def log_coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        k_z, k_h = x_proj.chunk(2, dim=-1)
        return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)  # log(1 - z), log(z g)


class MinLSTMCell(ScanCell):
    """minLSTM (Feng et al. 2024, sec. 3.2) with normalised gates f' = f / (f + i),
    i' = i / (f + i): h_t = f'_t h_{t-1} + i'_t g(k_h)."""

    gate_rows = 3
    scan_kind = 1  # the fused CPU kernel's minLSTM

    def log_coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        k_f, k_i, k_h = x_proj.chunk(3, dim=-1)
        diff = F.softplus(-k_f) - F.softplus(-k_i)  # log(i / f)
        return -F.softplus(diff), -F.softplus(-diff) + log_g(k_h)  # log f', log(i' g)
