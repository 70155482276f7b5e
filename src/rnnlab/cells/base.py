"""The cell contract shared by every recurrent cell.

A cell computes one time step. ``Recurrent`` owns the loop (layers, directions, lengths, dropout
masks, zoneout) and calls a cell in two phases:

1. ``project_input(x)`` maps the inputs of *all* time steps to the input part of the
   pre-activations at once, (T, B, I) -> (T, B, G*H), bias included: one large matrix product;
2. ``step(x_proj_t, state, recurrent_mask)`` adds the recurrent part and applies the gate
   arithmetic for one step, returning the new state. ``state[0]`` is the cell's output y_t.

Fast backends (issue 3) implement the same two phases, so they can be tested against this one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rnnlab.cells.norms import NormStep, StepNorms
from rnnlab.errors import ConfigError

State = tuple[Tensor, ...]


@dataclass(frozen=True)
class CellOptions:
    """Options every cell accepts.

    layer_norm: Ba et al. 2016: normalise W x and R y separately (over the whole stacked
        pre-activation of each), and, for LSTMs, c_t before the output activation h.
    norm: a normalisation whose statistics span the step's batch or past steps
        (``rnnlab.cells.norms``: "batch", "batch-layer", "assorted-time"), at the same sites as
        layer norm, on the step loop; "none" otherwise (layer norm is ``layer_norm``).
    norm_steps: how many time steps keep their own batch statistics (the batch kinds).
    norm_window: how many steps the assorted-time statistics span.
    forget_bias: initial value of the forget-gate bias (LSTM family with a forget gate).
    args: the cell's own arguments, (name, value) pairs checked by ``Recurrent`` against the
        cell's ``arguments``; absent ones take their defaults.
    """

    layer_norm: bool = False
    forget_bias: float = 1.0
    args: tuple[tuple[str, Any], ...] = ()  # the cell's own arguments (``Cell.arguments``)
    norm: str = "none"
    norm_steps: int = 100
    norm_window: int = 5

    @property
    def normalised(self) -> bool:
        """Whether any normalisation (layer norm or a step normalisation) is on."""
        return self.layer_norm or self.norm != "none"


class Cell(nn.Module, ABC):
    """Base class of every cell: one step from a precomputed input projection and a state.

    Subclasses set ``state_widths`` (the width of each state tensor as a multiple of H),
    ``zoneout_parts`` (how many leading state tensors zoneout applies to) and
    ``gate_rows`` (G, the number of H-row blocks in ``weight_ih``).
    """

    state_widths: tuple[int, ...] = (1,)
    zoneout_parts: int = 1
    gate_rows: int = 1
    recurrent_weights: bool = True  # False for the parallel-scan cells (no R, no recurrent dropout)
    fused_zoneout: bool = False  # True where fused_sequence takes zoneout masks (``zone=``)
    # The layer options this cell computes; ``Recurrent`` refuses the others by name.
    options_taken: frozenset[str] = frozenset(
        {"layer_norm", "zoneout", "recurrent_dropout", "norm", "quant_bits"}
    )
    # Why the cell does not take a layer option its design rules out (option -> reason), for
    # ``refusal``'s message: e.g. quant_bits where the outputs are not bounded by 1.
    option_reasons: dict[str, str] = {}
    # A boolean cell argument that turns on a normalisation of the cell's own at a site that a
    # step normalisation (``norm``) takes over (the spiking cells' input batch norm): with a
    # ``norm`` it is off, and asking for both is refused.
    norm_replaces: str | None = None
    fused_kernel: bool = True  # a fused CPU kernel (rnnlab.kernels) runs this cell's layers
    # False where a surrogate gradient stands in for a step function's (spiking units, events):
    # finite differences cannot check such a cell; its own tests check the surrogate instead.
    exact_gradient: bool = True
    # True where training draws noise inside the step (its step and fused forms then agree only
    # in evaluation, or under the same generator state).
    noisy_in_training: bool = False
    # Why an ONNX graph cannot compute this cell (export is then refused with it), or None.
    onnx_refusal: str | None = None
    # False where an output depends on later steps (the uBRU's smoothing): such a layer cannot
    # be fed in chunks.
    causal: bool = True
    # True where the step reads the time from it to the next step (the CRU): ``Recurrent`` then
    # appends the gaps (``forward(gaps=...)``, ones when omitted) to the inputs as a last column,
    # which ``project_input`` carries through as the last column of x_proj.
    takes_gaps: bool = False

    # The cell's own arguments (``Recurrent(cell_args=...)``; ``--cell-args`` on the command
    # line): name -> (default, description). A value has its default's type; ``check_args``
    # checks ranges.
    arguments: dict[str, tuple[Any, str]] = {}
    # Per-unit statistics of a step (``tally``), averaged by ``Recurrent`` over the valid steps
    # of a forward pass (``Recurrent.statistics()``), e.g. the fraction of units that emit an
    # event; a cell may turn them into a training penalty (``penalty``).
    tally_names: tuple[str, ...] = ()

    def arg(self, name: str) -> Any:
        """The value of one of the cell's own arguments."""
        return dict(self.options.args).get(name, self.arguments[name][0])

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        """Refuse (ConfigError) argument values out of range; ``args`` holds every argument."""

    def tally(self, state: State) -> tuple[Tensor, ...]:
        """The step statistics named by ``tally_names`` from a new state: each (B, H)."""
        return ()

    def penalty(self, means: dict[str, Tensor]) -> Tensor | None:
        """A term for the training loss from the forward pass's tallies (means over valid steps
        and units, differentiable where the tally is), or None."""
        return None

    def refusal(self, option: str) -> str | None:
        """Why this cell does not take ``option`` (a ``Recurrent`` option), or None if it does."""
        if option in self.options_taken:
            return None
        if option == "recurrent_dropout" and not self.recurrent_weights:
            return "it has no recurrent weights, so recurrent_dropout does not apply"
        if option in self.option_reasons:
            return f"it does not take {option}: {self.option_reasons[option]}"
        taken = ", ".join(sorted(self.options_taken)) or "none of them"
        return f"it does not take {option} (of the layer options it takes: {taken})"

    def __init__(self, input_size: int, hidden_size: int, options: CellOptions) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.options = options
        # The step normalisation (``options.norm``), if any: ``_make_step_norms``.
        self.step_norms: StepNorms | None = None

    # --- the contract -------------------------------------------------------------------------
    def project_input(self, x: Tensor) -> Tensor:
        """(..., I) -> (..., G*H): W x (layer-normalised if asked) plus the input bias."""
        if self.step_norms is not None:
            return F.linear(x, self.weight_ih)  # normalised in the step; the bias after it
        if not self.options.layer_norm:
            return F.linear(x, self.weight_ih, self.bias)  # one addmm, bias included
        return normalised_projection(x, self.weight_ih, self.ln_ih_weight, self.bias)

    def chrono_(self, t_max: int) -> None:
        """Chrono initialisation (Tallec & Ollivier 2018): gate biases that make each unit keep its
        state for a time drawn from [1, t_max - 1]. Cells with a keep or forget gate override it."""
        raise ConfigError(
            f"chrono initialisation needs a forget or update gate; {type(self).__name__} has none "
            "(it applies to the LSTM family and both GRUs)"
        )

    def _chrono_bias(self, t_max: int) -> Tensor:
        """log(u), u ~ U[1, t_max - 1], one per unit: sigma(log u) = 1 - 1/(u + 1)."""
        u = 1 + (t_max - 2) * torch.rand(self.hidden_size)
        return u.log()

    @abstractmethod
    def step(self, x_proj: Tensor, state: State, recurrent_mask: Tensor | None) -> State:
        """One step: x_proj (B, G*H), state tensors (B, w*H); the mask (B, H) multiplies y_{t-1}
        where it enters the recurrent products (variational recurrent dropout)."""

    def fused_sequence(
        self, x_proj: Tensor, state: State, valid: Tensor | None, recurrent_mask: Tensor | None
    ) -> tuple[Tensor, State] | tuple[Tensor, State, tuple[Tensor, ...]] | None:
        """All steps at once on a fused backend: x_proj (T, B, G*H), valid (T, B) bool.
        Returns (outputs (T, B, H), final state), or None where no fused backend applies; a cell
        with ``tally_names`` returns a third element, its tallies stacked (T, B, H) each, which
        ``Recurrent`` records as it does the step loop's."""
        return None

    # Why the cell has no GPU kernel (``gpu_sequence``), or None where it has one. Without one
    # a layer on a GPU runs ``fused_sequence`` where that computes on any device (the parallel
    # scans), else the step loop.
    gpu_refusal: str | None = "no GPU kernel has been written for this cell yet"
    # The layer options the GPU kernel computes; with any other the step loop runs on the GPU
    # (``lengths`` and initial states are always covered).
    gpu_options: frozenset[str] = frozenset()

    def gpu_sequence(
        self,
        x_proj: Tensor,
        state: State,
        valid: Tensor | None,
        recurrent_mask: Tensor | None,
        zone: Tensor | None = None,
    ) -> tuple[Tensor, State] | tuple[Tensor, State, tuple[Tensor, ...]] | None:
        """All steps at once on a GPU, by the cell's Triton kernels (``rnnlab.kernels.gpu*``):
        arguments and result as ``fused_sequence``'s, ``zone`` (T, B, parts*H) zoneout's keep
        masks. None where the kernels do not cover the cell or these options (``gpu_options``),
        or Triton is missing; ``Recurrent`` then falls back."""
        return None

    torch_kind: str | None = None  # torch's layer of the same function (kernels.torchrnn), if any

    def torch_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """(W_ih, W_hh, b_ih, b_hh) for torch's layer of the same function (``torch_kind``), or
        None where this cell's options make it another function (layer norm, a variant)."""
        return None

    def onnx_operator(
        self, x: Tensor, state: State, valid: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """While ONNX export traces: the layer as ONNX's own recurrent operator (``LSTM``, ``GRU``,
        ``RNN``: ``rnnlab.cells.onnx``) where it computes this cell's function; None
        elsewhere (the export then scans the step). x (T, B, I) raw inputs, valid (T, B, 1)."""
        return None

    def _blocks(self, w: Tensor, order: list[int]) -> Tensor:
        """w's H-row blocks (gates) in another order, for ONNX's gate order."""
        H = self.hidden_size
        return torch.cat([w[k * H : (k + 1) * H] for k in order])

    def _fused_available(self, x_proj: Tensor, layer_norm_fused: bool = False) -> bool:
        """The fused CPU kernels cover every cell on the CPU; layer norm only where the cell's
        kernel fuses it (``layer_norm_fused``: the LSTM family, both GRUs and tanh)."""
        if (self.options.layer_norm and not layer_norm_fused) or x_proj.device.type != "cpu":
            return False
        if self.step_norms is not None:
            return False
        from rnnlab.kernels import cpu

        return cpu.available()

    # --- shared helpers -----------------------------------------------------------------------
    def initial_state(self, batch_size: int, like: Tensor) -> State:
        """Zeros of the right widths, on the device and dtype of ``like``."""
        return tuple(like.new_zeros(batch_size, w * self.hidden_size) for w in self.state_widths)

    def _uniform_(self, *tensors: Tensor) -> None:
        """torch.nn's initialisation: U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for t in tensors:
                t.uniform_(-bound, bound)

    def _make_input_params(self, rows: int) -> None:
        """weight_ih (rows*H, I), weight_hh (rows*H, H), bias (rows*H) and, with layer norm,
        the gains of LN(W x) and LN(R y)."""
        H = self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows * H, self.input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows * H, H))
        self.bias = nn.Parameter(torch.zeros(rows * H))
        self._uniform_(self.weight_ih, self.weight_hh)
        if self.options.layer_norm:
            self.ln_ih_weight = nn.Parameter(torch.ones(rows * H))
            self.ln_hh_weight = nn.Parameter(torch.ones(rows * H))

    def _make_step_norms(self, sites: dict[str, int], shifted: tuple[str, ...] = ()) -> None:
        """The step normalisation that ``options.norm`` asks for, at these sites (name -> width),
        and its extra state parts after the cell's own (``core_parts`` stays the cell's)."""
        o = self.options
        if o.norm == "none":
            return
        self.step_norms = StepNorms(o.norm, self.hidden_size, sites, shifted, o.norm_steps,
                                    o.norm_window)  # fmt: skip
        self.core_parts = len(self.state_widths)
        self.state_widths = tuple(self.state_widths) + self.step_norms.extra_widths

    def _norm_step(self, state: State, valid: Tensor | None) -> NormStep:
        """The step normalisation of this step, from the state's extra parts."""
        assert self.step_norms is not None
        return self.step_norms.begin(state[self.core_parts :], valid)

    def _recurrent(self, y: Tensor, weight: Tensor, ln_weight: Tensor | None) -> Tensor:
        """R y, normalised with layer norm when ``ln_weight`` is given."""
        ry = y @ weight.t()
        return ry if ln_weight is None else layer_norm(ry, ln_weight)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, {self.options}"


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last dimension (Ba et al. 2016, eq. 4)."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def normalised_projection(x: Tensor, weight: Tensor, gain: Tensor, bias: Tensor) -> Tensor:
    """g LN(x W^T) + b over the last dimension, the same function as
    ``layer_norm(x @ weight.t(), gain) + bias``, which would keep x W^T ((T, B, G*H): the
    largest tensor of a layer) alive from the forward to the backward. This keeps x, W and
    each row's mean and 1/sigma, and recomputes the product in the backward. Under
    ``torch.compile`` and ``torch.export`` it is the plain composition (the compiler plans the
    memory itself)."""
    if torch.compiler.is_compiling():
        return layer_norm(x @ weight.t(), gain, eps=_EPS) + bias
    return _NormalisedProjection.apply(x, weight, gain, bias)


_EPS = 1e-5  # F.layer_norm's default
_CHUNK_ROWS = 4096  # rows per slice of the gain's gradient: no full-size temporary


class _NormalisedProjection(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, gain: Tensor, bias: Tensor
    ) -> Tensor:
        p = x @ weight.t()
        var, mean = torch.var_mean(p, dim=-1, unbiased=False, keepdim=True)
        rstd = torch.rsqrt(var + _EPS)
        ctx.save_for_backward(x, weight, gain, mean, rstd)
        return torch.addcmul(bias, p.sub_(mean).mul_(rstd), gain)

    @staticmethod
    @once_differentiable  # a second derivative would need mean and 1/sigma's: say so, not guess
    def backward(  # type: ignore[override]
        ctx: Any, d_out: Tensor
    ) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        x, weight, gain, mean, rstd = ctx.saved_tensors
        n = weight.shape[0]
        xhat = (x @ weight.t()).sub_(mean).mul_(rstd).reshape(-1, n)
        d = d_out.reshape(-1, n)
        d_gain = torch.zeros_like(gain)
        for start in range(0, d.shape[0], _CHUNK_ROWS):
            rows = slice(start, start + _CHUNK_ROWS)
            d_gain += (d[rows] * xhat[rows]).sum(0)
        d_bias = d.sum(0)
        # Through the normalisation, row by row: dp = rstd (dxhat - mean(dxhat)
        # - xhat mean(dxhat xhat)), with dxhat = d g.
        dxhat = d * gain
        m1 = dxhat.mean(-1, keepdim=True)
        m2 = torch.bmm(dxhat.unsqueeze(1), xhat.unsqueeze(2)).reshape(-1, 1) / n
        dp = dxhat.sub_(m1).sub_(xhat.mul_(m2)).mul_(rstd.reshape(-1, 1))
        d_x = (dp @ weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
        d_weight = dp.t() @ x.reshape(-1, x.shape[-1])
        return d_x, d_weight, d_gain, d_bias


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of x (T, B, F) within its own length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    lengths = torch.as_tensor(lengths, device=x.device)
    t = torch.arange(T, device=x.device)[:, None]  # (T, 1)
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    return x.gather(0, index.unsqueeze(-1).expand_as(x))
