"""The tanh RNN (Elman network)."""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.cells.base import Cell, CellOptions, State


class TanhCell(Cell):
    """y_t = tanh(W x_t + R y_{t-1} + b)

    Parameters: ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias`` (H) (torch's b_ih + b_hh);
    weights U(-1/sqrt(H), 1/sqrt(H)), bias zero. With layer norm:
    y_t = tanh(LN(W x_t) + LN(R y_{t-1}) + b).

    >>> cell = TanhCell(3, 4, CellOptions())
    >>> state = cell.initial_state(2, torch.zeros(1))
    >>> (y,) = cell.step(cell.project_input(torch.zeros(2, 3)), state, None)
    >>> tuple(y.shape)
    (2, 4)
    """

    state_widths = (1,)
    zoneout_parts = 1
    gate_rows = 1

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        self._make_input_params(1)
        self._make_step_norms({"ih": hidden_size, "hh": hidden_size})

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        y_prev = state[0]
        r_in = y_prev if recurrent_mask is None else y_prev * recurrent_mask
        if self.step_norms is not None:  # rnnlab.cells.norms; the bias after the sum
            n = self._norm_step(state, valid)
            pre = n("ih", x_proj) + n("hh", r_in @ self.weight_hh.t()) + self.bias
            return (torch.tanh(pre), *n.end())
        ln = self.ln_hh_weight if self.options.layer_norm else None
        return (torch.tanh(x_proj + self._recurrent(r_in, self.weight_hh, ln)),)

    fused_zoneout = True
    gpu_refusal = None
    gpu_options = frozenset({"recurrent_dropout", "zoneout", "layer_norm"})

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State] | None:
        """The Triton kernels (rnnlab.kernels.gpu_gru_like), zoneout and layer norm included."""
        from rnnlab.kernels import gpu_gru_like

        return gpu_gru_like.tanh_sequence(self, x_proj, state[0], valid, recurrent_mask, zone)

    torch_kind = "tanh"

    def torch_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        if self.options.normalised:
            return None
        return self.weight_ih, self.weight_hh, self.bias, torch.zeros_like(self.bias)

    def onnx_operator(
        self, x: Tensor, state: State, valid: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """ONNX's RNN with tanh: H_t = tanh(X_t W^T + H_{t-1} R^T + W_b + R_b), R_b = 0."""
        if self.options.normalised:
            return None
        from rnnlab.cells.onnx import onnx_rnn

        bias = torch.cat([self.bias, torch.zeros_like(self.bias)])
        return onnx_rnn("RNN", x, (self.weight_ih, self.weight_hh, bias), state, valid,
                        {"activations": ["Tanh"]})  # fmt: skip

    def fused_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State] | None:
        if not self._fused_available(x_proj, layer_norm_fused=True):
            return None
        from rnnlab.kernels import cpu

        ln = self.ln_hh_weight if self.options.layer_norm else None
        return cpu.tanh_sequence(x_proj, self.weight_hh, state[0], valid, recurrent_mask, zone, ln)
