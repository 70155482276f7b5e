"""The LSTM family of Greff et al. 2017 ("LSTM: A Search Space Odyssey"), gate order i, f, z, o.

Vanilla LSTM (``lstm-v``), Greff et al. section II::

    z_t = g(W_z x_t + R_z y_{t-1} + b_z)                       block input
    i_t = sigma(W_i x_t + R_i y_{t-1} + p_i * c_{t-1} + b_i)    input gate
    f_t = sigma(W_f x_t + R_f y_{t-1} + p_f * c_{t-1} + b_f)    forget gate
    c_t = z_t * i_t + c_{t-1} * f_t                             cell
    o_t = sigma(W_o x_t + R_o y_{t-1} + p_o * c_t + b_o)        output gate
    y_t = h(c_t) * o_t                                          block output

with g = h = tanh. The variants change one thing each (``VARIANTS`` below): NIG / NFG / NOG fix a
gate to 1, NIAF / NOAF replace g / h by the identity, NP drops the peepholes, CIFG sets
f_t = 1 - i_t, FGR adds R_{gate<-gate'} a_{t-1} to every gate's pre-activation, where a_{t-1} holds
the i, f, o activations of the previous step. ``lstm`` is the standard LSTM without peepholes
(``torch.nn.LSTM``'s function, same as ``lstm-np``).

Parameter layout:

- ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), ``bias`` (G*H): rows stacked i, f, z, o, holding
  only the G blocks the variant has (NIG has no i rows, NFG and CIFG no f rows, NOG no o rows);
  one bias per gate (torch keeps two; conversion adds them).
- ``peephole`` (P, H): rows i, f, o for the gates present (absent without peepholes).
- ``weight_gg`` (3H, 3H), FGR only: a_{t-1} (i, f, o) -> pre-activations (i, f, o).
- with layer norm: ``ln_ih_weight``, ``ln_hh_weight`` (G*H) and ``ln_c_weight``, ``ln_c_bias`` (H):
  pre = LN(W x) + LN(R y) + b (+ peepholes), and y_t = h(LN(c_t)) * o_t (Ba et al. 2016, sec. 3.1).

Initialisation: weights and peepholes U(-1/sqrt(H), 1/sqrt(H)) (torch.nn's bound), biases zero
except the forget gate's, which is ``CellOptions.forget_bias``.

The state is (y, c), and for FGR (y, c, a) with a (B, 3H); zoneout acts on y and c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State, layer_norm


@dataclass(frozen=True)
class LSTMVariant:
    """Which parts of the vanilla LSTM a variant keeps."""

    input_gate: bool = True
    forget_gate: bool = True
    output_gate: bool = True
    input_activation: bool = True  # g = tanh (False: identity, NIAF)
    output_activation: bool = True  # h = tanh (False: identity, NOAF)
    peepholes: bool = True
    coupled: bool = False  # CIFG: f_t = 1 - i_t
    full_gate_recurrence: bool = False  # FGR

    @property
    def blocks(self) -> tuple[str, ...]:
        """The row blocks of weight_ih / weight_hh / bias, in the order i, f, z, o."""
        has = {
            "i": self.input_gate,
            "f": self.forget_gate and not self.coupled,
            "z": True,
            "o": self.output_gate,
        }
        return tuple(k for k in "ifzo" if has[k])

    @property
    def peephole_rows(self) -> tuple[str, ...]:
        """The rows of ``peephole``, in the order i, f, o, for the gates present."""
        if not self.peepholes:
            return ()
        return tuple(k for k in self.blocks if k != "z")


VARIANTS: dict[str, LSTMVariant] = {
    "lstm": LSTMVariant(peepholes=False),
    "lstm-v": LSTMVariant(),
    "lstm-nig": LSTMVariant(input_gate=False),
    "lstm-nfg": LSTMVariant(forget_gate=False),
    "lstm-nog": LSTMVariant(output_gate=False),
    "lstm-niaf": LSTMVariant(input_activation=False),
    "lstm-noaf": LSTMVariant(output_activation=False),
    "lstm-np": LSTMVariant(peepholes=False),
    "lstm-cifg": LSTMVariant(coupled=True),
    "lstm-fgr": LSTMVariant(full_gate_recurrence=True),
}


class LSTMCell(Cell):
    """One cell of the LSTM family; ``variant`` says which (see the module docstring)."""

    zoneout_parts = 2

    def __init__(
        self, input_size: int, hidden_size: int, options: CellOptions, variant: LSTMVariant
    ) -> None:
        super().__init__(input_size, hidden_size, options)
        self.variant = variant
        self.blocks = variant.blocks
        self.gate_rows = len(self.blocks)
        self.state_widths = (1, 1, 3) if variant.full_gate_recurrence else (1, 1)
        H = hidden_size
        self._make_input_params(self.gate_rows)
        if "f" in self.blocks:
            k = self.blocks.index("f")
            with torch.no_grad():
                self.bias[k * H : (k + 1) * H] = options.forget_bias
        if variant.peephole_rows:
            self.peephole = nn.Parameter(torch.empty(len(variant.peephole_rows), H))
            self._uniform_(self.peephole)
        if variant.full_gate_recurrence:
            self.weight_gg = nn.Parameter(torch.empty(3 * H, 3 * H))
            self._uniform_(self.weight_gg)
        if options.layer_norm:
            self.ln_c_weight = nn.Parameter(torch.ones(H))
            self.ln_c_bias = nn.Parameter(torch.zeros(H))
        G = self.gate_rows
        self._make_step_norms({"ih": G * H, "hh": G * H, "c": H}, shifted=("c",))

    def chrono_(self, t_max: int) -> None:
        """b_f = log(u) and b_i = -b_f; without a forget gate (NFG, and CIFG whose f = 1 - i)
        the input gate alone takes b_i = -log(u)."""
        H, b = self.hidden_size, self._chrono_bias(t_max)
        with torch.no_grad():
            if "f" in self.blocks:
                k = self.blocks.index("f")
                self.bias[k * H : (k + 1) * H] = b
            elif "i" not in self.blocks:
                super().chrono_(t_max)
            if "i" in self.blocks:
                k = self.blocks.index("i")
                self.bias[k * H : (k + 1) * H] = -b

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        v = self.variant
        y_prev, c_prev = state[0], state[1]
        r_in = y_prev if recurrent_mask is None else y_prev * recurrent_mask
        n = None if self.step_norms is None else self._norm_step(state, valid)
        if n is not None:  # rnnlab.cells.norms; the bias after the sum
            pre = n("ih", x_proj) + n("hh", r_in @ self.weight_hh.t()) + self.bias
        else:
            ln = self.ln_hh_weight if self.options.layer_norm else None
            pre = x_proj + self._recurrent(r_in, self.weight_hh, ln)  # (B, G*H)
        blocks = dict(zip(self.blocks, pre.chunk(self.gate_rows, dim=-1), strict=True))
        if v.full_gate_recurrence:
            g_i, g_f, g_o = (state[2] @ self.weight_gg.t()).chunk(3, dim=-1)
            blocks["i"] = blocks["i"] + g_i
            blocks["f"] = blocks["f"] + g_f
            blocks["o"] = blocks["o"] + g_o
        peep = {name: self.peephole[k] for k, name in enumerate(v.peephole_rows)}

        z_t = torch.tanh(blocks["z"]) if v.input_activation else blocks["z"]
        i_t = self._gate(blocks, peep, "i", c_prev)
        if v.coupled:
            assert i_t is not None  # CIFG keeps its input gate
            f_t: Tensor | None = 1.0 - i_t
        else:
            f_t = self._gate(blocks, peep, "f", c_prev)
        c_t = (z_t if i_t is None else z_t * i_t) + (c_prev if f_t is None else c_prev * f_t)
        o_t = self._gate(blocks, peep, "o", c_t)

        c_out = (
            layer_norm(c_t, self.ln_c_weight, self.ln_c_bias) if self.options.layer_norm else c_t
        )
        if n is not None:
            c_out = n("c", c_t)
        h_c = torch.tanh(c_out) if v.output_activation else c_out
        y_t = h_c if o_t is None else h_c * o_t
        extra = () if n is None else n.end()
        if not v.full_gate_recurrence:
            return (y_t, c_t, *extra)
        assert i_t is not None and f_t is not None and o_t is not None  # FGR has every gate
        return (y_t, c_t, torch.cat((i_t, f_t, o_t), dim=-1), *extra)

    fused_zoneout = True

    torch_kind = "lstm"

    def torch_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """torch's LSTM is the variant with every gate, both activations and no peepholes
        (``lstm``, ``lstm-np``); the one bias is torch's b_ih (its b_hh zeros)."""
        v = self.variant
        plain = self.blocks == ("i", "f", "z", "o") and v.input_activation and v.output_activation
        if self.options.normalised or v.peephole_rows or v.coupled or not plain:
            return None
        return self.weight_ih, self.weight_hh, self.bias, torch.zeros_like(self.bias)

    def onnx_operator(
        self, x: Tensor, state: State, valid: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """ONNX's LSTM, for the variants whose function it is: every gate, both activations,
        no coupling and no gate-to-gate recurrence (``lstm``, ``lstm-np``, ``lstm-v``). Gates
        reordered from i, f, z, o to ONNX's i, o, f, c; peepholes to its P = (p_i, p_o, p_f),
        with p_i, p_f on c_{t-1} and p_o on c_t, as here."""
        v = self.variant
        full = self.blocks == ("i", "f", "z", "o") and v.input_activation and v.output_activation
        if self.options.normalised or v.coupled or v.full_gate_recurrence or not full:
            return None
        from rnnlab.cells.onnx import onnx_rnn

        order = [self.blocks.index(k) for k in "iofz"]
        bias = torch.cat([self._blocks(self.bias, order), torch.zeros_like(self.bias)])
        weights = (self._blocks(self.weight_ih, order), self._blocks(self.weight_hh, order), bias)
        peephole = None
        if v.peephole_rows:
            peephole = torch.cat([self.peephole[v.peephole_rows.index(k)] for k in "iof"])
        return onnx_rnn("LSTM", x, weights, state, valid, {}, peephole)

    gpu_refusal = None
    gpu_options = frozenset({"layer_norm", "zoneout", "recurrent_dropout"})

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State] | None:
        """The Triton kernels (rnnlab.kernels.gpu), zoneout and layer norm included."""
        from rnnlab.kernels import gpu

        return gpu.lstm_sequence(self, x_proj, state, valid, recurrent_mask, zone)

    def fused_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State] | None:
        """The fused CPU kernel (rnnlab.kernels.cpu), zoneout (``zone`` (T, B, 2H): the keep masks
        of y and c) and layer norm included."""
        if not self._fused_available(x_proj, layer_norm_fused=True):
            return None
        from rnnlab.kernels import cpu

        v = self.variant
        layout = [self.blocks.index(k) if k in self.blocks else -1 for k in "ifzo"]
        layout += [v.peephole_rows.index(k) if k in v.peephole_rows else -1 for k in "ifo"]
        flags = [int(v.coupled), int(v.input_activation), int(v.output_activation),
                 int(v.full_gate_recurrence)]  # fmt: skip
        return cpu.lstm_sequence(
            x_proj,
            self.weight_hh,
            self.peephole if v.peephole_rows else None,
            self.weight_gg if v.full_gate_recurrence else None,
            state,
            valid,
            recurrent_mask,
            layout,
            flags,
            zone,
            (self.ln_hh_weight, self.ln_c_weight, self.ln_c_bias)
            if self.options.layer_norm
            else None,
        )

    @staticmethod
    def _gate(
        blocks: dict[str, Tensor], peep: dict[str, Tensor], name: str, c: Tensor
    ) -> Tensor | None:
        """sigma(pre + p * c) for a gate the variant has; None for a gate fixed to 1."""
        if name not in blocks:
            return None
        pre = blocks[name] if name not in peep else blocks[name] + peep[name] * c
        return torch.sigmoid(pre)
