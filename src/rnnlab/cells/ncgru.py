"""NC-GRU, the Neumann-Cayley orthogonal GRU (Mucllari, Zadorozhnyy, Pospisil, Nguyen & Ye,
"Orthogonal Gated Recurrent Unit with Neumann-Cayley Transformation", 2022).

A GRU whose candidate's recurrent matrix W_c is orthogonal, kept so by the scaled Cayley
transform of a skew-symmetric A (Helfrich et al. 2018), with a modReLU candidate:

    r_t = sigmoid(U_r x_t + W_r h_{t-1} + b_r)
    u_t = sigmoid(U_u x_t + W_u h_{t-1} + b_u)
    a_t = U_c x_t + r_t * (W_c h_{t-1})
    c_t = modReLU(a_t) = sign(a_t) * relu(|a_t| + b_c)
    h_t = u_t * h_{t-1} + (1 - u_t) * c_t

    W_c = (I + A)^-1 (I - A) D,   A = M - M^T with M strictly upper triangular,
    D = diag(1, ..., 1, -1, ..., -1) with its last rho entries -1 (fixed).

The reset acts after the product, as in the authors' PyTorch character-level model (their
TensorFlow tasks apply it before: W_c (r * h)). a_t has no bias of its own: b_c is modReLU's.

The inverse (I + A)^-1 is not recomputed at every update of A: it is kept, and when A has
changed by Delta = A_old - A (an optimiser step) it is updated by the Neumann series of
(I - B Delta)^-1, B_new = (I + X + X^2) B with X = B Delta (``neumann_order`` terms, the
authors' default 2), and computed exactly every ``refresh`` updates (the authors' 49) or when
||X|| > 1/2 (where the series would converge slowly). The authors derive Delta from a plain
gradient step; here it is the step the optimiser actually took, whichever it is. The gradient
with respect to A is the exact one of the Cayley map, dL/dA = -B^T G (W_c + D)^T with
G = dL/dW_c, so that A = M - M^T gets dL/dM = V^T - V in its upper triangle, V = B^T G (W_c^T +
D): the scaled Cayley gradient of Helfrich et al.

Layout: ``weight_ih`` (3H, I) rows r, u, c; ``bias`` (2H) rows r, u; ``weight_hh`` (2H, H)
rows r, u (unconstrained); ``cayley`` (H, H), of which the strict upper triangle is M;
``modrelu_bias`` (H) b_c; buffers ``scaling`` (D), ``cayley_inverse``, ``cayley_inverse_of``
and ``cayley_updates`` (the kept inverse, saved with the weights). Initialisation as the
authors': A as in scoRNN, s_k ~ U(0, pi/2) and a_k = -sqrt((1 - cos s_k) / (1 + cos s_k))
on every other entry of the first superdiagonal of M; b_c ~ U(-0.01, 0.01); the other weights
torch's GRU initialisation U(-1/sqrt(H), 1/sqrt(H)), gate biases zero.

Cell arguments: ``negatives`` (rho; -1: half the units), ``neumann_order`` (1 to 3, default
2), ``refresh`` (49). Layer options: recurrent dropout (on h_{t-1} where it enters the
products); the step normalisations (``norm``, rnnlab.cells.norms: W x, R_{r,u} h and W_c h each
normalised, the gate biases after; on the step loop; a normalised W_c h is no longer the
orthogonal map's image, which the user then chose); layer norm and zoneout are refused, and so
is quantised training (modReLU's candidate, hence h, is unbounded). On the CPU a fused kernel
(``rnnlab.kernels``, csrc/gru_like.cpp) runs the layer with [W_r; W_u; W_c] stacked into one
recurrent product per step; the step loop is its reference.

>>> import torch
>>> from rnnlab import Recurrent
>>> layer = Recurrent("nc-gru", 3, 6)
>>> W = layer.cells[0].candidate_matrix().detach()
>>> bool(torch.allclose(W @ W.T, torch.eye(6), atol=1e-5))
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


class _CayleyMap(torch.autograd.Function):
    """W = B (I - A) D with B = (I + A)^-1 given; the exact gradient of the Cayley map."""

    @staticmethod
    def forward(A: Tensor, B: Tensor, d: Tensor) -> Tensor:  # type: ignore[override]
        eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        return (B @ (eye - A)) * d  # times diag(d) on the right

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        _, B, d = inputs
        ctx.save_for_backward(B, d, output)

    @staticmethod
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        B, d, W = ctx.saved_tensors
        # dW = -B dA (W + D): dL/dA = -B^T G (W + D)^T
        return -(B.t() @ G @ (W.t() + torch.diag(d))), None, None


def modrelu(a: Tensor, bias: Tensor) -> Tensor:
    """sign(a) relu(|a| + b) (Arjovsky et al. 2016)."""
    return torch.sign(a) * F.relu(a.abs() + bias)


class NCGRUCell(Cell):
    """NC-GRU (see the module docstring)."""

    gate_rows = 3
    state_widths = (1,)
    zoneout_parts = 0
    options_taken = frozenset({"recurrent_dropout", "norm"})
    option_reasons = {"quant_bits": "its modReLU candidate, hence its output, is unbounded, and "
                      "quantised outputs lie on [-1, 1]"}  # fmt: skip
    onnx_refusal = (
        "ONNX has no matrix inverse or solve for its Cayley transform (I + A)^-1 (I - A) D"
    )
    arguments = {
        "negatives": (-1, "entries -1 of the Cayley scaling D (-1: half the units)"),
        "neumann_order": (2, "terms of the Neumann series that updates (I + A)^-1 (1 to 3)"),
        "refresh": (49, "compute (I + A)^-1 exactly every this many updates of A"),
    }

    cayley_inverse: Tensor
    cayley_inverse_of: Tensor
    cayley_updates: Tensor
    _candidate: Tensor

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(2 * H, H))
        self.bias = nn.Parameter(torch.zeros(2 * H))
        self.cayley = nn.Parameter(torch.zeros(H, H))
        self.modrelu_bias = nn.Parameter(torch.empty(H))
        self._uniform_(self.weight_ih, self.weight_hh)
        with torch.no_grad():
            self.modrelu_bias.uniform_(-0.01, 0.01)
            s = torch.rand(H // 2) * (math.pi / 2)
            a = -torch.sqrt((1 - torch.cos(s)) / (1 + torch.cos(s)))
            for k in range(H // 2):
                self.cayley[2 * k, 2 * k + 1] = a[k]
        rho = self.arg("negatives")
        rho = H // 2 if rho < 0 else min(rho, H)
        d = torch.ones(H)
        if rho:
            d[H - rho :] = -1.0
        self.register_buffer("scaling", d)
        # (I + A)^-1 as the Neumann updates have carried it, the A it belongs to, and the updates
        # since it was computed exactly: saved with the weights, so that a reloaded or resumed
        # model computes exactly what the running one did (an exact inverse would differ from the
        # carried one by up to the series' error).
        with torch.no_grad():
            A = self.skew()
            self.register_buffer("cayley_inverse", torch.linalg.inv(torch.eye(H) + A))
            self.register_buffer("cayley_inverse_of", A.clone())
            self.register_buffer("cayley_updates", torch.zeros((), dtype=torch.long))
        self._make_step_norms({"ih": 3 * H, "hh": 2 * H, "hc": H})

    def _apply(self, fn: Any, recurse: bool = True) -> NCGRUCell:
        """After a change of dtype (``.double()``), the kept inverse is computed afresh at the new
        precision (a float32 one is not a float64 one); a move between devices keeps it."""
        before = self.cayley_inverse.dtype
        super()._apply(fn, recurse)
        if self.cayley_inverse.dtype != before:
            with torch.no_grad():
                A = self.skew()
                eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
                self.cayley_inverse.copy_(torch.linalg.inv(eye + A))
                self.cayley_inverse_of.copy_(A)
                self.cayley_updates.zero_()
        return self

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        if args["negatives"] < -1:
            raise ConfigError(
                f"nc-gru's negatives must be -1 or at least 0, got {args['negatives']}"
            )
        if not 1 <= args["neumann_order"] <= 3:
            raise ConfigError(
                f"nc-gru's neumann_order must be 1, 2 or 3, got {args['neumann_order']}"
            )
        if args["refresh"] < 1:
            raise ConfigError(f"nc-gru's refresh must be at least 1, got {args['refresh']}")

    def skew(self) -> Tensor:
        upper = torch.triu(self.cayley, diagonal=1)
        return upper - upper.t()

    def _inverse_for(self, A: Tensor) -> Tensor:
        """(I + A)^-1, updated by the Neumann series from the kept one where A moved a little."""
        eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        if torch.compiler.is_compiling():
            return torch.linalg.inv(eye + A)
        with torch.no_grad():
            A = A.detach()
            old, B = self.cayley_inverse_of, self.cayley_inverse
            if torch.equal(old, A):
                return B.clone()
            self.cayley_updates += 1
            X = B @ (old - A)
            exact = int(self.cayley_updates) % self.arg("refresh") == 0 or bool(
                torch.linalg.matrix_norm(X, ord=2) > 0.5
            )
            if exact:
                new = torch.linalg.inv(eye + A)
                self.cayley_updates.zero_()
            else:
                series, power = eye + X, X
                for _ in range(self.arg("neumann_order") - 1):
                    power = power @ X
                    series = series + power
                new = series @ B
            self.cayley_inverse.copy_(new)
            self.cayley_inverse_of.copy_(A)
            return new  # not the buffer: a graph that saved it must not see the next update

    def candidate_matrix(self) -> Tensor:
        """W_c = (I + A)^-1 (I - A) D."""
        A = self.skew()
        return _CayleyMap.apply(A, self._inverse_for(A), self.scaling)

    def project_input(self, x: Tensor) -> Tensor:
        # The candidate's rows have no bias (b_c is modReLU's); W_c is formed here, once per
        # sequence, and read by every step of it.
        self._candidate = self.candidate_matrix()
        bias = F.pad(self.bias, (0, self.hidden_size))
        return F.linear(x, self.weight_ih, None if self.step_norms is not None else bias)

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        h_prev = state[0]
        h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
        n = None if self.step_norms is None else self._norm_step(state, valid)
        rh = F.linear(h_in, self.weight_hh)
        ch = F.linear(h_in, self._candidate)
        if n is not None:  # rnnlab.cells.norms; the gate biases after the normalisation
            x_proj = n("ih", x_proj) + F.pad(self.bias, (0, self.hidden_size))
            rh, ch = n("hh", rh), n("hc", ch)
        r_x, u_x, c_x = x_proj.chunk(3, dim=-1)
        r_h, u_h = rh.chunk(2, dim=-1)
        r = torch.sigmoid(r_x + r_h)
        u = torch.sigmoid(u_x + u_h)
        c = modrelu(c_x + r * ch, self.modrelu_bias)
        h = u * h_prev + (1.0 - u) * c
        return (h,) if n is None else (h, *n.end())

    gpu_refusal = None
    gpu_options = frozenset({"recurrent_dropout"})  # the only layer option NC-GRU takes

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State] | None:
        """The Triton kernels (rnnlab.kernels.gpu_gru_like) with [R_r; R_u; W_c] stacked into one
        product per step, W_c as ``project_input`` formed it."""
        from rnnlab.kernels import gpu_gru_like

        if zone is not None:
            return None
        weight = torch.cat([self.weight_hh, self._candidate])  # (3H, H): rows r, u, c
        return gpu_gru_like.ncgru_sequence(self, x_proj, weight, state[0], valid, recurrent_mask)

    def fused_sequence(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """The fused CPU kernel with W_c (formed by ``project_input``) below the gates' rows."""
        if not self._fused_available(x_proj):
            return None
        from rnnlab.kernels import cpu

        weight = torch.cat([self.weight_hh, self._candidate])  # (3H, H): rows r, u, c
        return cpu.ncgru_sequence(x_proj, weight, self.modrelu_bias, state[0], valid,
                                  recurrent_mask)  # fmt: skip
