"""The state-regularised LSTM, SR-LSTM and SR-LSTM-P (Wang & Niepert, "State-Regularized
Recurrent Neural Networks", ICML 2019).

An LSTM whose output (hidden state) h_t is pulled to a mixture of k learned centroids, as the
SR-GRU's state is (``rnnlab.cells.srgru``, whose ``StateRegularised`` this cell shares), while
its cell state c_t is not: the hidden state moves between (soft) automaton states and the cell
state is the unbounded memory beside them. With peepholes (SR-LSTM-P, the authors' model for
balanced parentheses) the gates read c directly, which moves the counting into c (the paper's
"automaton with external memory"). As the authors' code (``deepsemantic/sr-rnns``,
``Balanced_Parenthess/SR_LSTM_P.py``), with rows i, f, z, o of ``weight_ih`` (4H, I) and
``weight_hh`` (4H, H), the bias b (4H) and the peepholes p_i, p_f, p_o (rows of ``peephole``
(3, H)):

    i_t = sigma(W_i x_t + R_i h_{t-1} + p_i * c_{t-1} + b_i)
    f_t = sigma(W_f x_t + R_f h_{t-1} + p_f * c_{t-1} + b_f)
    z_t = tanh(W_z x_t + R_z h_{t-1} + b_z)
    c_t = f_t * c_{t-1} + i_t * z_t
    o_t = sigma(W_o x_t + R_o h_{t-1} + p_o * c_t + b_o)
    u_t = o_t * tanh(c_t)
    alpha_t = softmax(S u_t / tau)          (S: the k x H centroids)
    h_t = S^T alpha_t

The state is (h_t, c_t). Without peepholes (cell argument ``peepholes`` false: the plain
SR-LSTM) the p terms are absent. Deviations from the authors' code: their forget gate adds the
input gate's peephole p_i * c_{t-1} (their p_f is created and never used), here each gate has
its own; their last step (the end symbol) skips the pull to the centroids, here every step is
regularised (a task that wants an unregularised read-out adds its own layer); their softmax has
no temperature (tau = 1, the default here).

Initialisation as theirs: each H-row block of ``weight_ih`` and ``weight_hh`` orthogonal, biases
zero (``CellOptions.forget_bias`` does not apply), peepholes and centroids U(-0.5, 0.5).

Cell arguments: ``centroids`` (k, 10; the authors use 5 for balanced parentheses),
``temperature`` (tau, 1), ``peepholes`` (true). Layer options: recurrent dropout (on h_{t-1}
where it enters the products); the step normalisations (``norm``, rnnlab.cells.norms, on the
step loop: W x and R h each normalised, the bias after, and c_t with a shift before its tanh,
as in the LSTM family; the peepholes read the raw c) and quantised training (``quant_bits``, as
the SR-GRU); layer norm and zoneout are refused. On the CPU a fused kernel
(csrc/state_regularised.cpp, beside the SR-GRU's) runs the layer where neither is on; the step
loop is its reference.

>>> import torch
>>> from rnnlab import Recurrent
>>> layer = Recurrent("sr-lstm", 3, 8, cell_args={"centroids": 4})
>>> out, (h, c) = layer(torch.randn(5, 2, 3))
>>> tuple(layer.cells[0].transition_probabilities(torch.randn(5, 2, 3)).shape)
(5, 2, 4)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import CellOptions, State
from rnnlab.cells.norms import NormStep
from rnnlab.cells.srgru import StateRegularised


class SRLSTMCell(StateRegularised):
    """SR-LSTM / SR-LSTM-P (see the module docstring)."""

    gate_rows = 4
    state_widths = (1, 1)
    cell_name = "sr-lstm"
    arguments = {
        **StateRegularised.arguments,
        "peepholes": (True, "peephole connections from c to the gates (SR-LSTM-P)"),
    }

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, H))
        self.bias = nn.Parameter(torch.zeros(4 * H))
        with torch.no_grad():
            for w in (self.weight_ih, self.weight_hh):
                for block in w.split(H):
                    nn.init.orthogonal_(block)
        if self.arg("peepholes"):
            self.peephole = nn.Parameter(torch.empty(3, H).uniform_(-0.5, 0.5))  # i, f, o
        self._make_centroids(0.5)
        self._make_step_norms({"ih": 4 * H, "hh": 4 * H, "c": H}, shifted=("c",))

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, None if self.step_norms is not None else self.bias)

    def unregularised(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None, n: NormStep | None
    ) -> tuple[Tensor, State]:
        h_prev, c_prev = state[:2]
        h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
        rh = F.linear(h_in, self.weight_hh)
        pre = x_proj + rh if n is None else n("ih", x_proj) + n("hh", rh) + self.bias
        i_pre, f_pre, z_pre, o_pre = pre.chunk(4, dim=-1)
        if self.arg("peepholes"):
            p_i, p_f, p_o = self.peephole.chunk(3)  # (1, H) each
            i_pre, f_pre = i_pre + p_i * c_prev, f_pre + p_f * c_prev
        c = torch.sigmoid(f_pre) * c_prev + torch.sigmoid(i_pre) * torch.tanh(z_pre)
        if self.arg("peepholes"):
            o_pre = o_pre + p_o * c
        c_out = c if n is None else n("c", c)
        return torch.sigmoid(o_pre) * torch.tanh(c_out), (c,)

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State] | None:
        """The Triton kernels (rnnlab.kernels.gpu_sr): one product and one kernel a step."""
        from rnnlab.kernels import gpu_sr

        if zone is not None:
            return None
        return gpu_sr.srlstm_sequence(self, x_proj, (state[0], state[1]), valid, recurrent_mask)

    def _fused_layer(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State]:
        from rnnlab.kernels import ops_sr

        peephole = self.peephole if self.arg("peepholes") else None
        return ops_sr.srlstm_sequence(x_proj, self.weight_hh, peephole, self.centroids,
                                      self.arg("temperature"), (state[0], state[1]), valid,
                                      recurrent_mask)  # fmt: skip
