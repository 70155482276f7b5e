"""The unit-wise Bayesian recurrent unit, uBRU (Bittar & Garner, "Bayesian recurrent units and the
forward-backward algorithm", Interspeech 2022).

Each unit is a two-state hidden Markov model: an event is present (s = 1) or absent (s = 0). The
unit's output is the posterior probability that the event is present, derived from Bayes' rule.
Its input enters as a likelihood ratio r_t = P(x_t | s = 0) / P(x_t | s = 1) = exp(min(W x_t, 10))
(W x_t large pushes the unit towards "absent"), and three probabilities per unit are trained:
the prior a_init = sigmoid(theta_0) of the first step and the transitions p1 = sigmoid(theta_1)
= P(s_t = 1 | s_{t-1} = 1), p2 = sigmoid(theta_2) = P(s_t = 1 | s_{t-1} = 0). Forward
(filtering) recursion, a_{-1} = a_init:

    q_t = p1 a_{t-1} + p2 (1 - a_{t-1})                 (the predicted prior)
    a_t = q_t / (q_t + r_t (1 - q_t) + 1e-11)           P(s_t = 1 | x_1..t)

and, with ``smoothing`` (the authors' default), the backward recursion of the forward-backward
algorithm from each sequence's last step, gamma_T = a_T:

    gamma_t = a_t (p1 gamma_{t+1} / q_{t+1} + (1 - p1) (1 - gamma_{t+1}) / (1 - q_{t+1}))

which is P(s_t = 1 | x_1..T): the output is then gamma, and the layer is not causal (a chunked
call is not one call). Without it the output is a_t and the unit streams like any other.

Layout and initialisation as the authors' code (``idiap/bayesian-recurrence``, ``ubru.py``):
``weight_ih`` (H, I) Xavier-uniform, no bias; ``theta`` (3, H) zeros (every probability 1/2).
The batch normalisation of W x that their layers apply is not part of the cell. State: (a,), the
filtered posterior; its initial value is a_init (``initial_state``). Cell argument: ``smoothing``
(True). Layer options: the step normalisations (``norm``, rnnlab.cells.norms, on the step loop:
W x normalised with a learned shift, as the batch norm of the authors' layers but per step);
quantised training (``quant_bits``: W on its grid, each filtered
posterior a_t, which is the state, rounded to the outputs' grid on [0, 1]; the smoothing reads
the rounded ones); no recurrent weights, and zoneout and layer norm are refused.

On the CPU, fused kernels (``rnnlab.kernels.ops_bru``, csrc/bru.cpp) run the filter over all steps
and the smoothing pass over each sequence within its length, each with its backward; the step
loop and ``smooth``'s PyTorch recursion are the reference (``backend="step"``).

>>> import torch
>>> from rnnlab import Recurrent
>>> out, (a,) = Recurrent("bru", 3, 4)(torch.randn(6, 2, 3))
>>> bool(((out > 0) & (out < 1)).all())
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State, reverse_padded

EPS = 1e-11


class BRUCell(Cell):
    """uBRU (see the module docstring)."""

    gate_rows = 1
    state_widths = (1,)
    zoneout_parts = 0
    recurrent_weights = False
    options_taken = frozenset({"norm", "quant_bits"})  # posteriors in (0, 1)
    fused_kernel = True
    arguments = {"smoothing": (True, "the backward (smoothing) recursion: outputs P(s_t | x_1..T)")}
    gpu_refusal = None
    # Recurrent dropout, zoneout and layer norm the cell refuses: its kernels need none.
    gpu_options: frozenset[str] = frozenset()

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        nn.init.xavier_uniform_(self.weight_ih)
        self.theta = nn.Parameter(torch.zeros(3, hidden_size))
        # W x has no bias: a normalised one learns a shift (the log-likelihood ratio's offset).
        self._make_step_norms({"ih": hidden_size}, shifted=("ih",))

    @property
    def smoothing(self) -> bool:
        return bool(self.arg("smoothing"))

    @property
    def causal(self) -> bool:  # type: ignore[override]
        return not self.smoothing

    @property
    def onnx_refusal(self) -> str | None:  # type: ignore[override]
        if self.smoothing:
            return "its smoothing pass runs backwards over each sequence after the filter"
        return None

    def initial_state(self, batch_size: int, like: Tensor) -> State:
        a_init = torch.sigmoid(self.theta[0]).to(like.dtype)
        extra = super().initial_state(batch_size, like)[1:]  # a step normalisation's parts
        return (a_init.expand(batch_size, self.hidden_size), *extra)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih)

    def _transitions(self) -> tuple[Tensor, Tensor]:
        """(p1, p2) = (sigmoid(theta_1), sigmoid(theta_2)), each (H)."""
        return torch.sigmoid(self.theta[1]), torch.sigmoid(self.theta[2])

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        a_prev = state[0]
        n = None if self.step_norms is None else self._norm_step(state, valid)
        if n is not None:  # rnnlab.cells.norms
            x_proj = n("ih", x_proj)
        p1, p2 = self._transitions()
        q = p1 * a_prev + p2 * (1.0 - a_prev)
        r = torch.exp(x_proj.clamp(max=10.0))
        a = q / (q + r * (1.0 - q) + EPS)
        return (a,) if n is None else (a, *n.end())

    def fused_sequence(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """The filter over all steps in one kernel (the CPU); the smoothing pass follows in
        ``smooth``, which ``Recurrent`` then asks for its kernel too (``fused``)."""
        if not self._fused_available(x_proj):
            return None
        from rnnlab.kernels import ops_bru

        p1, p2 = (p.to(x_proj.dtype) for p in self._transitions())
        out, a_T = ops_bru.filter_sequence(x_proj, p1, p2, state[0], valid)
        return out, (a_T,)

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State] | None:
        """The filter in one persistent Triton kernel (rnnlab.kernels.gpu_bru); the smoothing
        pass follows in ``smooth``, on its kernel too (``_gpu_smoothing``)."""
        if zone is not None:
            return None
        from rnnlab.kernels import gpu_bru

        return gpu_bru.bru_sequence(self, x_proj, state, valid)

    def _gpu_smoothing(self, filtered: Tensor) -> bool:
        """Whether the smoothing takes its Triton kernel: where the layer's filter took one (a
        GPU tensor by ``rnnlab.recurrent._on_gpu``, which the tests replace to run the kernels in
        Triton's interpreter; Triton present; no step normalisation)."""
        from rnnlab import recurrent

        if not recurrent._on_gpu(filtered) or self.step_norms is not None:
            return False
        from rnnlab.kernels import gpu_bru

        return gpu_bru.available()

    def smooth(self, filtered: Tensor, lengths: Tensor | None, fused: bool = False) -> Tensor:
        """The backward recursion over filtered posteriors (T, B, H), from each sequence's last
        step (``lengths``; padded steps come back as zeros). ``fused``: the layer may run on a
        kernel (``Recurrent``: not ``backend="step"``, no ``quant_bits``), so the smoothing takes
        one where the filter's applied (``_gpu_smoothing``: the Triton kernel on a GPU;
        ``_fused_available``: the CPU's; neither with a step normalisation);
        otherwise the PyTorch recursion below, the reference."""
        p1, p2 = self._transitions()
        if fused and self._gpu_smoothing(filtered):
            from rnnlab.kernels import gpu_bru

            p1, p2 = p1.to(filtered.dtype), p2.to(filtered.dtype)
            return gpu_bru.smooth_sequence(filtered, p1, p2, lengths)
        if fused and self._fused_available(filtered):
            from rnnlab.kernels import ops_bru

            p1, p2 = p1.to(filtered.dtype), p2.to(filtered.dtype)
            return ops_bru.smooth_sequence(filtered, p1, p2, lengths)
        a = reverse_padded(filtered, lengths)  # step k is each sequence's (len - 1 - k)
        gammas = [a[0]]
        for k in range(1, a.shape[0]):
            q_next = p1 * a[k] + p2 * (1.0 - a[k])  # the prior predicted from a_t for t + 1
            g = gammas[-1]
            gammas.append(a[k] * (p1 * g / q_next + (1.0 - p1) * (1.0 - g) / (1.0 - q_next)))
        gamma = reverse_padded(torch.stack(gammas), lengths)
        if lengths is None:
            return gamma
        T = filtered.shape[0]
        valid = torch.arange(T, device=gamma.device)[:, None] < lengths.to(gamma.device)[None, :]
        return torch.where(valid.unsqueeze(-1), gamma, 0.0)
