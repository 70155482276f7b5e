"""Gated recurrent units in two forms (rows of the weights in the order r, u, n).

Both: r_t = sigma(W_r x_t + R_r h_{t-1} + b_r), u_t = sigma(W_u x_t + R_u h_{t-1} + b_u),
h_t = (1 - u_t) * n_t + u_t * h_{t-1}. They differ in where the reset gate acts:

- ``gru`` (torch / cuDNN): n_t = tanh(W_n x_t + b_n + r_t * (R_n h_{t-1} + b'_n)); parameters
  ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), ``bias`` (3H, torch's b_ih) and ``bias_hh`` (3H,
  torch's b_hh). The biases of r and u could be merged, but they are kept apart so that the
  parameters map one to one onto ``torch.nn.GRU``.
- ``gru-v1`` (Chung et al. 2014, eq. 5-8): n_t = tanh(W_n x_t + R_n (r_t * h_{t-1}) + b_n);
  ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), ``bias`` (3H).

Weights U(-1/sqrt(H), 1/sqrt(H)), biases zero. With layer norm the recurrent products are
normalised separately from W x: for ``gru`` LN(R h) over all 3H rows; for ``gru-v1`` LN(R_ru h)
over the 2H gate rows and LN(R_n (r * h)) over the H candidate rows, since the second product
depends on the first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State, layer_norm


class GRUCell(Cell):
    """The torch/cuDNN GRU: the reset gate multiplies R_n h + b'_n (see the module docstring)."""

    state_widths = (1,)
    zoneout_parts = 1
    gate_rows = 3

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        self._make_input_params(3)
        self.bias_hh = nn.Parameter(torch.zeros(3 * hidden_size))
        self._make_step_norms({"ih": 3 * hidden_size, "hh": 3 * hidden_size})

    def chrono_(self, t_max: int) -> None:
        """h = (1 - u) n + u h_prev: u keeps the state, so b_u = log(u) (Tallec & Ollivier)."""
        H = self.hidden_size
        with torch.no_grad():
            self.bias[H : 2 * H] = self._chrono_bias(t_max)
            bias_hh = getattr(self, "bias_hh", None)  # gru-v1 has none
            if bias_hh is not None:
                bias_hh[H : 2 * H] = 0.0

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        h_prev = state[0]
        r_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
        n = None if self.step_norms is None else self._norm_step(state, valid)
        if n is not None:  # rnnlab.cells.norms; the biases after the normalisation
            x_proj = n("ih", x_proj) + self.bias
            rh = n("hh", r_in @ self.weight_hh.t()) + self.bias_hh
        else:
            ln = self.ln_hh_weight if self.options.layer_norm else None
            rh = self._recurrent(r_in, self.weight_hh, ln) + self.bias_hh  # (B, 3H)
        x_r, x_u, x_n = x_proj.chunk(3, dim=-1)
        h_r, h_u, h_n = rh.chunk(3, dim=-1)
        r_t = torch.sigmoid(x_r + h_r)
        u_t = torch.sigmoid(x_u + h_u)
        n_t = torch.tanh(x_n + r_t * h_n)
        h_t = n_t + u_t * (h_prev - n_t)  # = (1 - u) n + u h_prev
        return (h_t,) if n is None else (h_t, *n.end())

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
        """The Triton kernels (rnnlab.kernels.gpu_gru), where cuDNN does not run the layer
        (zoneout, recurrent dropout in training, layer norm; ``backend="fused"``)."""
        from rnnlab.kernels import gpu_gru

        return gpu_gru.gru_sequence(self, x_proj, state[0], valid, recurrent_mask, zone)

    torch_kind = "gru"

    def torch_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        if self.options.normalised:
            return None
        return self.weight_ih, self.weight_hh, self.bias, self.bias_hh

    def onnx_operator(
        self, x: Tensor, state: State, valid: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """ONNX's GRU with ``linear_before_reset=1`` (the reset gate multiplies R_h h + R_bh, as
        here and in torch), gates reordered from r, u, n to ONNX's z, r, h."""
        if self.options.normalised:
            return None
        from rnnlab.cells.onnx import onnx_rnn

        order = [1, 0, 2]
        weights = (self._blocks(self.weight_ih, order), self._blocks(self.weight_hh, order),
                   torch.cat([self._blocks(self.bias, order),
                              self._blocks(self.bias_hh, order)]))  # fmt: skip
        return onnx_rnn("GRU", x, weights, state, valid, {"linear_before_reset": 1})

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
        return cpu.gru_sequence(
            x_proj, self.weight_hh, self.bias_hh, state[0], valid, recurrent_mask, False, zone, ln
        )


class GRUv1Cell(Cell):
    """Chung et al. 2014's GRU: the reset gate multiplies h_{t-1} before R_n."""

    state_widths = (1,)
    zoneout_parts = 1
    gate_rows = 3

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        self._make_input_params(3)
        H = hidden_size
        self._make_step_norms({"ih": 3 * H, "hh_ru": 2 * H, "hh_n": H})

    def chrono_(self, t_max: int) -> None:
        """h = (1 - u) n + u h_prev: u keeps the state, so b_u = log(u) (Tallec & Ollivier)."""
        H = self.hidden_size
        with torch.no_grad():
            self.bias[H : 2 * H] = self._chrono_bias(t_max)
            bias_hh = getattr(self, "bias_hh", None)  # gru-v1 has none
            if bias_hh is not None:
                bias_hh[H : 2 * H] = 0.0

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        H = self.hidden_size
        h_prev = state[0]
        r_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
        w_ru, w_n = self.weight_hh[: 2 * H], self.weight_hh[2 * H :]
        h_ru = r_in @ w_ru.t()  # (B, 2H)
        n = None if self.step_norms is None else self._norm_step(state, valid)
        if n is not None:  # rnnlab.cells.norms; the bias after the normalisation
            x_proj = n("ih", x_proj) + self.bias
            h_ru = n("hh_ru", h_ru)
        if self.options.layer_norm:
            h_ru = layer_norm(h_ru, self.ln_hh_weight[: 2 * H])
        x_r, x_u, x_n = x_proj.chunk(3, dim=-1)
        h_r, h_u = h_ru.chunk(2, dim=-1)
        r_t = torch.sigmoid(x_r + h_r)
        u_t = torch.sigmoid(x_u + h_u)
        h_n = (r_t * r_in) @ w_n.t()  # (B, H)
        if n is not None:
            h_n = n("hh_n", h_n)
        if self.options.layer_norm:
            h_n = layer_norm(h_n, self.ln_hh_weight[2 * H :])
        n_t = torch.tanh(x_n + h_n)
        h_t = n_t + u_t * (h_prev - n_t)
        return (h_t,) if n is None else (h_t, *n.end())

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
        """The Triton kernels (rnnlab.kernels.gpu_gru), zoneout and layer norm included."""
        from rnnlab.kernels import gpu_gru

        return gpu_gru.gru_v1_sequence(self, x_proj, state[0], valid, recurrent_mask, zone)

    def onnx_operator(
        self, x: Tensor, state: State, valid: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """ONNX's GRU with ``linear_before_reset=0`` (the reset gate multiplies h before the
        product, Chung et al.'s form) and no recurrent bias, gates reordered to z, r, h."""
        if self.options.normalised:
            return None
        from rnnlab.cells.onnx import onnx_rnn

        order = [1, 0, 2]
        bias = torch.cat([self._blocks(self.bias, order), torch.zeros_like(self.bias)])
        weights = (self._blocks(self.weight_ih, order), self._blocks(self.weight_hh, order), bias)
        return onnx_rnn("GRU", x, weights, state, valid, {"linear_before_reset": 0})

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
        return cpu.gru_sequence(
            x_proj, self.weight_hh, None, state[0], valid, recurrent_mask, True, zone, ln
        )
