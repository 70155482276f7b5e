"""The state-regularised GRU, SR-GRU (Wang & Niepert, "State-Regularized Recurrent Neural
Networks", ICML 2019).

A GRU whose new state is pulled to a mixture of k learned centroids s_1..s_k: the cell's
transitions become (soft) transitions between k states, so that a finite automaton can be read
off a trained network. With rows z, r, c of ``weight_ih`` (3H, I) and ``weight_hh`` (3H, H), no
biases, and the hard sigmoid hs(v) = clip(0.2 v + 0.5, 0, 1), as in the authors' code
(``deepsemantic/sr-rnns``, ``SR_GRU.py``):

    z_t = hs(U_z x_t + W_z h_{t-1})
    r_t = hs(U_r x_t + W_r h_{t-1})
    c_t = tanh(U_c x_t + W_c (r_t * h_{t-1}))
    u_t = (1 - z_t) * c_t + z_t * h_{t-1}
    alpha_t = softmax(S u_t / tau)          (S: the k x H centroids)
    h_t = S^T alpha_t

As tau goes to 0, h_t becomes exactly the nearest (by inner product) centroid: the automaton's
state. ``transition_probabilities`` gives alpha_t for every step (for extraction). What the
state-regularised cells share (centroids, the softmax, extraction) is ``StateRegularised``,
which the SR-LSTM (``rnnlab.cells.srlstm``) subclasses too. Each block of
``weight_ih`` and ``weight_hh`` is initialised orthogonal, the centroids U(-0.1, 0.1).

Cell arguments: ``centroids`` (k, 10; the authors use 50 for Tomita grammars and 5 for balanced
parentheses) and ``temperature`` (tau, 1; the authors also run 5). Layer options: recurrent
dropout (on h_{t-1} where it enters the products); the step normalisations (``norm``,
rnnlab.cells.norms, on the step loop: U x with a learned shift in place of the bias the cell
lacks, W_{z,r} h and W_c (r h) each normalised) and quantised training (``quant_bits``: h_t, a
mixture of centroids that u_t in [-1, 1] pulls, is clipped to [-1, 1] and rounded); layer norm
and zoneout are refused. On the CPU a fused kernel (``rnnlab.kernels.ops_sr``,
csrc/state_regularised.cpp) runs the layer where no step normalisation or quantisation is on;
the step loop is its reference, and ``transition_probabilities`` runs the step.

>>> import torch
>>> from rnnlab import Recurrent
>>> layer = Recurrent("sr-gru", 3, 8, cell_args={"centroids": 4})
>>> out, (h,) = layer(torch.randn(5, 2, 3))
>>> tuple(layer.cells[0].transition_probabilities(torch.randn(5, 2, 3)).shape)
(5, 2, 4)
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import Cell, CellOptions, State
from rnnlab.cells.norms import NormStep
from rnnlab.errors import ConfigError


def hard_sigmoid(v: Tensor) -> Tensor:
    """clip(0.2 v + 0.5, 0, 1), Theano's hard sigmoid."""
    return (0.2 * v + 0.5).clamp(0.0, 1.0)


class StateRegularised(Cell):
    """What the state-regularised cells share (Wang & Niepert 2019, section 3): the centroids S
    (k, H), the softmax over them with temperature tau, alpha_t = softmax(S u_t / tau), and the
    new output h_t = S^T alpha_t. A subclass computes u_t, the state its recurrence would have
    had (``unregularised``); every other part of its state (the SR-LSTM's cell state) passes
    through unchanged. ``transition_probabilities`` runs a sequence and returns every alpha_t,
    from which ``extract_automaton`` reads the automaton."""

    state_widths: tuple[int, ...] = (1,)
    zoneout_parts = 0
    options_taken = frozenset({"recurrent_dropout", "norm", "quant_bits"})
    cell_name = ""  # the registry's name, for messages
    arguments = {
        "centroids": (10, "the number k of centroids (the automaton's states at most)"),
        "temperature": (1.0, "tau of the softmax over centroids"),
    }

    def _make_centroids(self, bound: float) -> None:
        """S (k, H), U(-bound, bound)."""
        k = int(self.arg("centroids"))
        self.centroids = nn.Parameter(torch.empty(k, self.hidden_size).uniform_(-bound, bound))

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        if not 1 <= args["centroids"] <= 100_000:
            raise ConfigError(
                f"{cls.cell_name}'s centroids must lie in [1, 100000], got {args['centroids']}"
            )
        if not args["temperature"] > 0:
            raise ConfigError(
                f"{cls.cell_name}'s temperature must be positive, got {args['temperature']}"
            )

    @abstractmethod
    def unregularised(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None, n: NormStep | None
    ) -> tuple[Tensor, State]:
        """u_t (B, H), the output before the pull to the centroids, and the rest of the cell's
        own new state (its parts after the first); ``n`` normalises the sites (``norm``)."""

    def advance(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> tuple[Tensor, State]:  # fmt: skip
        """alpha_t (B, k) and the new state (S^T alpha_t, rest...)."""
        n = None if self.step_norms is None else self._norm_step(state, valid)
        u, rest = self.unregularised(x_proj, state, recurrent_mask, n)
        alpha = torch.softmax(F.linear(u, self.centroids) / self.arg("temperature"), dim=-1)
        new = (alpha @ self.centroids, *rest)
        return alpha, new if n is None else (*new, *n.end())

    def step(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None,
        valid: Tensor | None = None,
    ) -> State:  # fmt: skip
        return self.advance(x_proj, state, recurrent_mask, valid)[1]

    # The Triton kernels (rnnlab.kernels.gpu_sr); the cells take neither zoneout nor layer norm.
    gpu_refusal = None
    gpu_options = frozenset({"recurrent_dropout"})

    def fused_sequence(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """The fused CPU kernel (csrc/state_regularised.cpp): the recurrence, the softmax over
        the centroids and the pull in one pass a step. None with the step normalisations (and
        ``Recurrent`` runs quantised training on the step loop)."""
        if not self._fused_available(x_proj):
            return None
        return self._fused_layer(x_proj, state, valid, recurrent_mask)

    @abstractmethod
    def _fused_layer(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State]:
        """One layer and direction on the fused kernel: (outputs (T, B, H), final state)."""

    def transition_probabilities(self, x: Tensor, state: State | None = None) -> Tensor:
        """alpha_t (T, B, k) over a sequence x (T, B, I) from ``state`` (zeros): which centroid
        each step moves to, for reading off an automaton."""
        x_proj = self.project_input(x)
        if state is None:
            state = self.initial_state(x.shape[1], x_proj)
        alphas = []
        for t in range(x.shape[0]):
            alpha, state = self.advance(x_proj[t], state, None)
            alphas.append(alpha)
        return torch.stack(alphas)


class SRGRUCell(StateRegularised):
    """SR-GRU (see the module docstring)."""

    gate_rows = 3
    cell_name = "sr-gru"

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__(input_size, hidden_size, options)
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * H, H))
        with torch.no_grad():
            for w in (self.weight_ih, self.weight_hh):
                for block in w.split(H):
                    nn.init.orthogonal_(block)
        self._make_centroids(0.1)
        # No bias to follow the normalisation: the input site learns a shift instead.
        self._make_step_norms({"ih": 3 * H, "hh_zr": 2 * H, "hh_c": H}, shifted=("ih",))

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih)  # no biases, as the authors' cell

    def unregularised(
        self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None, n: NormStep | None
    ) -> tuple[Tensor, State]:
        h_prev = state[0]
        h_in = h_prev if recurrent_mask is None else h_prev * recurrent_mask
        W_zr, W_c = self.weight_hh.split([2 * self.hidden_size, self.hidden_size])
        zr_h = F.linear(h_in, W_zr)
        if n is not None:
            x_proj, zr_h = n("ih", x_proj), n("hh_zr", zr_h)
        z_x, r_x, c_x = x_proj.chunk(3, dim=-1)
        z_h, r_h = zr_h.chunk(2, dim=-1)
        z = hard_sigmoid(z_x + z_h)
        r = hard_sigmoid(r_x + r_h)
        c_h = F.linear(r * h_in, W_c)
        c = torch.tanh(c_x + (c_h if n is None else n("hh_c", c_h)))
        return (1.0 - z) * c + z * h_prev, ()

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State] | None:
        """The Triton kernels (rnnlab.kernels.gpu_sr): two products and two kernels a step."""
        from rnnlab.kernels import gpu_sr

        if zone is not None:
            return None
        return gpu_sr.srgru_sequence(self, x_proj, state[0], valid, recurrent_mask)

    def _fused_layer(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State]:
        from rnnlab.kernels import ops_sr

        out, h = ops_sr.srgru_sequence(x_proj, self.weight_hh, self.centroids,
                                       self.arg("temperature"), state[0], valid,
                                       recurrent_mask)  # fmt: skip
        return out, (h,)


def extract_automaton(
    cell: StateRegularised, sequences: list[Tensor], accepting: Tensor
) -> tuple[int, dict[tuple[int, int], int], set[int]]:
    """The finite automaton of a trained SR-GRU or SR-LSTM, read off as Wang & Niepert's
    extraction does (for the SR-LSTM, the automaton over its centroids: what its cell state
    adds, a counter say, is not in it).

    ``sequences``: inputs (T_i, I) of one-hot symbols, each starting with the start symbol;
    ``accepting``: (k,) bool, which centroids the classifier accepts. Each sequence is run from
    h_0 = 0; its state at each step is the most probable centroid; the transitions (state,
    symbol) -> next state are counted over all sequences, and from the state reached by the
    start symbol a breadth-first walk keeps, for each state and symbol, the most frequent
    target. Returns (start state, transitions {(state, symbol): state}, accepting states
    reached)."""
    counts: dict[tuple[int, int], dict[int, int]] = {}
    starts: dict[int, int] = {}
    with torch.no_grad():
        for x in sequences:
            path = cell.transition_probabilities(x.unsqueeze(1).to(cell.centroids.dtype))
            states = path[:, 0].argmax(-1).tolist()
            symbols = x.argmax(-1).tolist()
            starts[states[0]] = starts.get(states[0], 0) + 1
            for t in range(1, len(states)):
                key = (states[t - 1], symbols[t])
                counts.setdefault(key, {})
                counts[key][states[t]] = counts[key].get(states[t], 0) + 1
    start = max(starts, key=lambda s: starts[s])
    transitions: dict[tuple[int, int], int] = {}
    seen, queue = {start}, [start]
    while queue:
        state = queue.pop(0)
        for (source, symbol), targets in sorted(counts.items()):
            if source != state:
                continue
            target = max(targets, key=lambda s: targets[s])
            transitions[(source, symbol)] = target
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return start, transitions, {s for s in seen if bool(accepting[s])}
