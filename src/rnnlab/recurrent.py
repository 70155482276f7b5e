"""``Recurrent``: the one time loop over any cell of the zoo.

It owns layers, directions, padding (``lengths``), dropout between layers, variational recurrent
dropout and zoneout; cells only compute a step (see ``rnnlab.cells.base``). This plain step-by-step
loop is the reference every faster backend is tested against.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from rnnlab.cells import CELLS, Cell, CellOptions, GRUCell, State, make_cell, probe_cell
from rnnlab.cells.base import reverse_padded
from rnnlab.cells.norms import NORMS, QuantisedWeight, quantise_output
from rnnlab.errors import ConfigError, ConfigTypeError, unknown_name
from rnnlab.export import export_layer, onnx_exporting, refuse_unsupported_export

# "auto": torch's own layer where it computes the cell's function and is the faster choice
# (cuDNN on a GPU; oneDNN's LSTM on the CPU: rnnlab.kernels.torchrnn), else the fused backend where
# it applies, else the step loop; "step": always the step loop (the reference); "fused": the
# fused backend, or an error where it does not apply; "torch": torch's layer, or an error.
BACKENDS = ("auto", "step", "fused", "torch")


def _unequal(valid: Tensor | None) -> bool:
    """Whether a batch's lengths differ (its valid mask (T, B, 1) is not all true); checked on
    the CPU only, where the answer picks the backend (on a GPU it would cost a sync), and never
    while torch.compile traces (the value is data; torch's layer is not run there anyway)."""
    if valid is None or valid.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return not bool(valid.all())


# Cells torch.nn can express exactly, and the torch module class of each.
_TORCH_EQUIVALENT = {"lstm": nn.LSTM, "lstm-np": nn.LSTM, "gru": nn.GRU, "tanh": nn.RNN}


# Bounds of the Python API (run configs are bounded tighter): beyond them a size is a mistake
# whose allocation would fail slowly or take the machine's memory.
MAX_SIZE, MAX_LAYERS = 2**20, 1024


def _check_argument_types(cfg: RecurrentConfig) -> None:
    """Each argument's type (and the sizes' bounds), before any value is used: one TypeError
    (``ConfigTypeError``) or ValueError (``ConfigError``) naming the argument."""
    for key in ("cell", "backend", "norm"):
        value = getattr(cfg, key)
        if not isinstance(value, str):
            names = {"cell": CELLS, "backend": BACKENDS, "norm": NORMS}[key]
            raise ConfigTypeError(f"{key} must be a name (a string: {', '.join(names)}), got "
                                  f"{value!r}")  # fmt: skip
    for key, high in (("input_size", MAX_SIZE), ("hidden_size", MAX_SIZE),
                      ("num_layers", MAX_LAYERS), ("chrono", None), ("norm_steps", MAX_SIZE),
                      ("norm_window", 1024), ("quant_bits", None)):  # fmt: skip
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigTypeError(f"{key} must be an int, got {value!r} "
                                  f"({type(value).__name__})")  # fmt: skip
        if high is not None and value > high:
            raise ConfigError(f"{key} must be at most {high:,}, got {value:,}")
    for key in ("bidirectional", "batch_first", "layer_norm"):
        value = getattr(cfg, key)
        if not isinstance(value, bool):
            raise ConfigTypeError(f"{key} must be True or False, got {value!r}")
    for key in ("dropout", "recurrent_dropout", "zoneout", "forget_bias"):
        value = getattr(cfg, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigTypeError(f"{key} must be a number, got {value!r} "
                                  f"({type(value).__name__})")  # fmt: skip
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")


def _check_tensor(name: str, value: object) -> None:
    """An input or state part: a floating-point torch tensor (numpy arrays, lists and integer
    tensors are refused by name rather than failing deep in a product)."""
    if not isinstance(value, Tensor):
        hint = (
            " (torch.from_numpy(a).float() converts it)"
            if type(value).__module__ == "numpy"
            else ""
        )
        raise TypeError(f"Recurrent's {name} must be a torch.Tensor, got "
                        f"{type(value).__name__}{hint}")  # fmt: skip
    if not value.is_floating_point():
        raise TypeError(f"Recurrent's {name} must be a floating-point tensor, got {value.dtype} "
                        "(.float() converts it)")  # fmt: skip


def _check_inputs(x: object, state: object) -> None:
    _check_tensor("input x", x)
    if state is None or isinstance(state, Tensor):
        parts: tuple[object, ...] = () if state is None else (state,)
    elif isinstance(state, (tuple, list)):
        parts = tuple(state)
    else:
        raise TypeError(f"Recurrent's state must be a tuple of tensors ((h,), (h, c), ...), got "
                        f"{type(state).__name__}")  # fmt: skip
    for part in parts:
        _check_tensor("state", part)


@dataclass(frozen=True)
class RecurrentConfig:
    """Everything that defines a ``Recurrent`` stack (written into run directories)."""

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    batch_first: bool = False
    layer_norm: bool = False
    forget_bias: float = 1.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    backend: str = "auto"
    chrono: int = 0
    cell_args: dict[str, Any] = field(default_factory=dict)
    norm: str = "none"
    norm_steps: int = 100
    norm_window: int = 5
    quant_bits: int = 0

    def __post_init__(self) -> None:
        _check_argument_types(self)
        if self.norm not in NORMS:
            raise unknown_name("norm", self.norm, NORMS)
        if self.norm == "layer":  # the same as layer_norm=True, recorded as that
            object.__setattr__(self, "layer_norm", True)
            object.__setattr__(self, "norm", "none")
        if self.layer_norm and self.norm != "none":
            raise ConfigError(f"choose one normalisation: layer_norm=True and norm={self.norm!r}")
        for key in ("norm_steps", "norm_window"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.quant_bits != 0 and not 2 <= self.quant_bits <= 16:
            raise ConfigError(f"quant_bits must be 0 (off) or 2 to 16, got {self.quant_bits}")
        if self.cell not in CELLS:
            raise unknown_name("cell", self.cell, CELLS)
        if self.backend not in BACKENDS:
            raise unknown_name("backend", self.backend, BACKENDS)
        for key in ("input_size", "hidden_size", "num_layers"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        for key in ("dropout", "recurrent_dropout", "zoneout"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {value!r}")
        if self.chrono != 0 and self.chrono < 3:
            raise ConfigError(f"chrono (T_max) must be 0 (off) or at least 3, got {self.chrono}")
        check_cell_args(self.cell, self.cell_args)


def check_cell_args(cell: str, args: dict[str, Any]) -> dict[str, Any]:
    """Every argument of ``cell`` (``Cell.arguments``), defaults filled in; a name the cell does
    not take, a value of another type, NaN or inf is refused in one line naming the argument."""
    if not isinstance(args, dict):
        raise ConfigError(f"cell_args must be a dict of name: value, got {type(args).__name__}")
    known = probe_cell(cell).arguments
    for name, value in args.items():
        if name not in known:
            if not known:
                raise ConfigError(f"cell {cell!r} takes no cell arguments (got {name!r})")
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"cell {cell!r} has no argument {name!r}{hint}; its arguments: "
                              f"{', '.join(sorted(known))}")  # fmt: skip
        default = known[name][0]
        kind = type(default)
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True  # an integer where a float is expected
        if not ok:
            raise ConfigError(f"cell argument {name} of {cell!r} must be {kind.__name__}, "
                              f"got {value!r}")  # fmt: skip
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"cell argument {name} of {cell!r} must be finite, got {value!r}")
    full = {name: args.get(name, default) for name, (default, _) in known.items()}
    type(probe_cell(cell)).check_args(full)
    return full


def parse_cell_args(cell: str, text: str) -> dict[str, Any]:
    """``name=value,name=value`` (the command line's ``--cell-args``) as the typed dict
    ``Recurrent(cell_args=...)`` takes; the types come from the cell's defaults."""
    known = probe_cell(cell).arguments
    args: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigError(f"cell argument {item!r} is not name=value")
        if name not in known:
            check_cell_args(cell, {name: 0})  # the one-line refusal with the valid names
        kind = type(known[name][0])
        try:
            if kind is bool:
                if raw.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                args[name] = raw.strip().lower() in ("true", "1")
            else:
                args[name] = kind(raw)
        except ValueError:
            raise ConfigError(f"cell argument {name} of {cell!r} must be {kind.__name__}, got "
                              f"{raw!r}") from None  # fmt: skip
    check_cell_args(cell, args)
    return args


class Recurrent(nn.Module):
    """A stack of recurrent layers built from any registered cell.

    Args follow ``torch.nn.LSTM``: ``input_size``, ``hidden_size``, ``num_layers``,
    ``bidirectional``, ``dropout`` (on the outputs of every layer but the last, training only),
    ``batch_first``; and for every cell: ``layer_norm`` (Ba et al. 2016), ``forget_bias``
    (initial forget-gate bias of the LSTM family), ``recurrent_dropout`` (Gal & Ghahramani 2016:
    one mask per sequence and layer, on y_{t-1} where it enters the recurrent products) and
    ``zoneout`` (Krueger et al. 2017: each unit of y, and of c for LSTMs, keeps its previous value
    with this probability in training, and the expectation is used in evaluation); ``chrono``
    (T_max > 2: chrono initialisation of the gate biases, Tallec & Ollivier 2018, for the LSTM
    family and both GRUs; 0: off). ``norm``: "layer" (= ``layer_norm``), or a normalisation
    whose statistics span the batch or past steps, on the step loop (``rnnlab.cells.norms``):
    "batch" (Cooijmans et al. 2017, statistics per time step; ``norm_steps`` steps keep their
    own), "batch-layer" (Ziaee & Cano 2022), "assorted-time" (Pospisil et al. 2024, over the
    last ``norm_window`` steps); such a cell's state gains parts after its own (a clock, and the
    window's values). ``quant_bits`` (2 to 16; 0: off): quantised training (Hubara et al. 2018),
    weight matrices and outputs rounded in the forward pass, straight-through gradients.

    ``forward(x, lengths=None, state=None)``:

    - x: (T, B, I), or (B, T, I) with ``batch_first``;
    - lengths: (B,) valid steps per sequence; steps past a sequence's length never change its
      outputs (they are zero there) or its final state, and the backward direction of a
      bidirectional layer starts at each sequence's own last step;
    - state: a tuple of tensors, one per state part of the cell ((y,) for tanh and GRUs,
      (y, c) for LSTMs, (y, c, a) for FGR), each (num_layers * num_directions, B, width),
      indexed layer * num_directions + direction as in torch; zeros when omitted;
    - gaps: (T, B) (or (B, T) with ``batch_first``) the time from each step to the next (the
      interval an output looks ahead: in a next-step model, from the input's time stamp to the
      target's), for cells that take them (``Cell.takes_gaps``: the CRU; ones when omitted);
      other cells refuse them in one line (give them dt as an input feature instead). The
      backward direction of a bidirectional layer sees them reversed within each length (from
      each step to the one before it; 0 at its last step, the sequence's first); a sequence fed
      in chunks gets each chunk's gaps.

    Returns ``(output, state)``: output (T, B, D*H) (or batch-first) and the final state in the
    same layout as the initial one.

    >>> layer = Recurrent("lstm-cifg", 88, 16, num_layers=2, batch_first=True)
    >>> out, (y, c) = layer(torch.zeros(4, 10, 88), lengths=torch.tensor([10, 7, 3, 1]))
    >>> tuple(out.shape), tuple(y.shape)
    ((4, 10, 16), (2, 4, 16))
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        batch_first: bool = False,
        layer_norm: bool = False,
        forget_bias: float = 1.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        backend: str = "auto",
        chrono: int = 0,
        cell_args: dict[str, Any] | None = None,
        norm: str = "none",
        norm_steps: int = 100,
        norm_window: int = 5,
        quant_bits: int = 0,
    ) -> None:
        super().__init__()
        self.config = RecurrentConfig(
            cell=cell,
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            batch_first=batch_first,
            layer_norm=layer_norm,
            forget_bias=forget_bias,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            backend=backend,
            chrono=chrono,
            cell_args=dict(cell_args) if isinstance(cell_args, dict) else cell_args or {},
            norm=norm,
            norm_steps=norm_steps,
            norm_window=norm_window,
            quant_bits=quant_bits,
        )
        cfg = self.config
        options = CellOptions(
            layer_norm=cfg.layer_norm,
            norm=cfg.norm,
            norm_steps=norm_steps,
            norm_window=norm_window,
            forget_bias=forget_bias,
            args=tuple(sorted(check_cell_args(cell, self.config.cell_args).items())),
        )
        probe = probe_cell(cell)
        asked = {"layer_norm": cfg.layer_norm, "zoneout": zoneout > 0,
                 "recurrent_dropout": recurrent_dropout > 0, "norm": cfg.norm != "none",
                 "quant_bits": quant_bits > 0}  # fmt: skip
        for option, on in asked.items():
            reason = probe.refusal(option) if on else None
            if reason is not None:
                raise ConfigError(f"cell {cell!r}: {reason}")
        replaced = probe.norm_replaces  # a cell argument whose normalisation ``norm`` replaces
        if cfg.norm != "none" and replaced and self.config.cell_args.get(replaced):
            raise ConfigError(f"cell {cell!r}: norm={cfg.norm} takes the place of its cell "
                              f"argument {replaced}; leave {replaced}=true out")  # fmt: skip
        self.num_directions = 2 if bidirectional else 1
        self.cells = nn.ModuleList(
            make_cell(
                cell,
                input_size if layer == 0 else self.num_directions * hidden_size,
                hidden_size,
                options,
            )
            for layer in range(num_layers)
            for _ in range(self.num_directions)
        )
        if chrono:
            for c in self.layer_cells:
                c.chrono_(chrono)
        if quant_bits:  # the forward pass sees quantised weight matrices (rnnlab.cells.norms)
            for c in self.layer_cells:
                for name, _ in list(c.named_parameters(recurse=False)):
                    if name.startswith("weight_"):
                        parametrize.register_parametrization(c, name, QuantisedWeight(quant_bits))
        self._tallies: list[tuple[Cell, dict[str, Tensor]]] = []  # of the last forward pass
        # name -> [sum, count] over every forward pass while ``collecting_statistics`` runs
        self._collected: dict[str, list[float]] | None = None

    @classmethod
    def from_config(cls, config: RecurrentConfig) -> Recurrent:
        return cls(**asdict(config))

    # Convenience views of the config, named as in torch.nn.
    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def layer_cells(self) -> list[Cell]:
        """The cells, indexed layer * num_directions + direction."""
        return [cast(Cell, cell) for cell in self.cells]

    @property
    def output_size(self) -> int:
        return self.num_directions * self.config.hidden_size

    # --- forward ------------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        state: State | None = None,
        gaps: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        cfg = self.config
        _check_inputs(x, state)
        if x.dim() != 3:
            raise ValueError(
                f"Recurrent expects a 3-d input ({'B, T' if cfg.batch_first else 'T, B'}, I), "
                f"got shape {tuple(x.shape)}"
            )
        if x.size(-1) != cfg.input_size:
            raise ValueError(
                f"input width {x.size(-1)} does not match input_size={cfg.input_size} "
                f"(input shape {tuple(x.shape)})"
            )
        if cfg.batch_first:
            x = x.transpose(0, 1)
        T, B = x.shape[0], x.shape[1]
        if T == 0:
            raise ValueError(f"Recurrent got an input with no time steps (shape {tuple(x.shape)})")
        if onnx_exporting():
            random = (
                cfg.recurrent_dropout > 0
                or cfg.zoneout > 0
                or (cfg.dropout > 0 and cfg.num_layers > 1)
            )
            refuse_unsupported_export(self.training and random)
            if cfg.quant_bits:
                raise ConfigError(
                    "rnnlab: ONNX export of a quantised Recurrent (quant_bits) is not "
                    "supported: its graph would not round the outputs"
                )
            if cfg.norm in ("batch-layer", "assorted-time"):  # tried: the exporter fails on them
                raise ConfigError(f"rnnlab: ONNX export of norm={cfg.norm!r} is not supported "
                                  "(norm='batch' and layer_norm are)")  # fmt: skip
            if self.training and cfg.norm != "none":
                raise ConfigError(
                    f"rnnlab: a Recurrent with norm={cfg.norm!r} in training mode updates its "
                    "batch statistics; call .eval() before export"
                )
        valid = None if lengths is None else self._valid_mask(lengths, T, B, x.device)
        if valid is not None:
            # Whatever padding holds (NaN included) never reaches a product: the input
            # projection's weight gradient sums x over every step, padded ones too.
            x = torch.where(valid, x, 0.0)
        states = self._initial_states(state, B, x)
        gap_column = self._gap_column(gaps, x, valid)
        if not torch.compiler.is_compiling():
            self._tallies = []

        finals: list[State] = []
        layer_input = x
        for layer in range(cfg.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                inp = layer_input
                if direction == 1:
                    inp = reverse_padded(layer_input, lengths)
                if gap_column is not None:
                    gap = gap_column if direction == 0 else _reversed_gaps(gap_column, lengths)
                    inp = torch.cat([inp, gap], dim=-1)
                out, final = self._run(self.layer_cells[k], inp, states[k], valid)
                outputs.append(out if direction == 0 else reverse_padded(out, lengths))
                finals.append(final)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if cfg.dropout > 0 and layer < cfg.num_layers - 1:
                layer_input = F.dropout(layer_input, cfg.dropout, self.training)

        output = layer_input.transpose(0, 1) if cfg.batch_first else layer_input
        final_state = tuple(torch.stack(parts) for parts in zip(*finals, strict=True))
        return output, final_state

    def run_layer(self, layer: int, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One layer of a unidirectional, time-major stack on its own: x (T, B, I_layer) ->
        (T, B, H) and the final state, parts (1, B, w*H). For models that act between layers
        (the language model's locked dropout)."""
        if self.num_directions != 1 or self.config.batch_first:
            raise ConfigError("run_layer needs a unidirectional, time-major Recurrent")
        cell = self.layer_cells[layer]
        if layer == 0 and not torch.compiler.is_compiling():
            self._tallies = []  # a new pass through the stack
        start = cell.initial_state(x.shape[1], x) if state is None else tuple(s[0] for s in state)
        if cell.takes_gaps:  # unit gaps (regular steps)
            x = torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)
        out, final = self._run(cell, x, start, None)
        return out, tuple(s.unsqueeze(0) for s in final)

    def _run(
        self, cell: Cell, x: Tensor, state: State, valid: Tensor | None
    ) -> tuple[Tensor, State]:
        """One direction of one layer. x (T, B, I) -> (T, B, H). A cell with a smoothing pass
        (the uBRU's backward recursion) applies it to the outputs of the whole sequence, with
        its kernel where the filter ran on one (any backend but "step", no per-step rounding)."""
        out, final = self._run_steps(cell, x, state, valid)
        if getattr(cell, "smoothing", False):
            lengths = None if valid is None else valid[..., 0].sum(0)
            fused = self.config.backend != "step" and not self.config.quant_bits
            out = cast(Any, cell).smooth(out, lengths, fused=fused)
        return out, final

    def _run_steps(
        self, cell: Cell, x: Tensor, state: State, valid: Tensor | None
    ) -> tuple[Tensor, State]:
        """One direction of one layer, step by step. x (T, B, I) -> (T, B, H)."""
        cfg = self.config
        if onnx_exporting():  # ONNX's own operator, or a Scan of the step (rnnlab.export)
            zone = self._zoneout_masks(x.shape[0], state, cell.zoneout_parts)
            return export_layer(cell, x, state, valid, zone)
        stepwise = cfg.quant_bits > 0  # the outputs are quantised after each step
        if cfg.backend in ("auto", "torch") and not stepwise:
            ran = self._torch_layer(cell, x, state, valid)
            if ran is not None:
                return ran
        x_proj = cell.project_input(x)  # (T, B, G*H): all input products at once
        mask = None
        if self.training and cfg.recurrent_dropout > 0:
            # One mask per sequence, reused at every step (Gal & Ghahramani 2016, sec. 4).
            keep = 1.0 - cfg.recurrent_dropout
            mask = torch.bernoulli(state[0].new_full(state[0].shape, keep)) / keep
        zone = self._zoneout_masks(x_proj.shape[0], state, cell.zoneout_parts)
        if cfg.backend != "step" and not stepwise:
            steps_valid = None if valid is None else valid[..., 0]
            fused = None
            if _on_gpu(x_proj):  # the Triton kernels (kernels.gpu*), where the cell has them
                fused = cell.gpu_sequence(x_proj, state, steps_valid, mask, zone)
            if fused is None and (zone is None or cell.fused_zoneout):
                fused = (
                    cell.fused_sequence(x_proj, state, steps_valid, mask)
                    if zone is None
                    else cell.fused_sequence(x_proj, state, steps_valid, mask, zone=zone)  # type: ignore[call-arg]
                )
            if fused is not None:
                # A cell with step statistics returns them too, each stacked (T, B, H).
                out, final, *tallied = fused
                if tallied:
                    self._record_tallies(cell, tallied[0], valid)
                return out, final
        if cfg.backend == "fused":
            raise ConfigError(
                f"the fused backend does not apply to cell {cfg.cell!r} with these options "
                f"(zoneout={cfg.zoneout}, layer_norm={cfg.layer_norm}, norm={cfg.norm}, "
                f"quant_bits={cfg.quant_bits}, device {x.device.type}, "
                f"extension: {_fused_status()})"
            )
        outputs = []
        tallies: list[tuple[Tensor, ...]] = []
        normed = cell.step_norms is not None
        for t in range(x.shape[0]):
            if normed:  # batch statistics over the step's valid rows
                new = cell.step(x_proj[t], state, mask, valid=None if valid is None else valid[t])  # type: ignore[call-arg]
            else:
                new = cell.step(x_proj[t], state, mask)
            if stepwise:
                new = (quantise_output(new[0], cfg.quant_bits), *new[1:])
            if zone is not None:
                new = self._zoneout(new, state, zone[t])
            if cell.tally_names:
                tallies.append(cell.tally(new))
            if valid is not None:
                # Padded steps keep the previous state, so final states ignore padding.
                v = valid[t]  # (B, 1)
                new = tuple(torch.where(v, n, s) for n, s in zip(new, state, strict=True))
                outputs.append(torch.where(v, new[0], 0.0))
            else:
                outputs.append(new[0])
            state = new
        if tallies:
            stacked = tuple(torch.stack(values) for values in zip(*tallies, strict=True))
            self._record_tallies(cell, stacked, valid)
        return torch.stack(outputs), state

    def _gap_column(self, gaps: Tensor | None, x: Tensor, valid: Tensor | None) -> Tensor | None:
        """The time gaps as a (T, B, 1) input column for a cell that takes them (ones where
        none are given: regular steps), zero on padded steps; None for other cells, which
        refuse gaps (a GRU given dt takes it as an input feature, appended by the caller)."""
        cfg = self.config
        if not self.layer_cells[0].takes_gaps:
            if gaps is not None:
                takers = ", ".join(n for n in CELLS if probe_cell(n).takes_gaps)
                raise ConfigError(f"cell {cfg.cell!r} takes no time gaps (gaps=); append them to "
                                  f"the input features instead, or use a cell that takes them: "
                                  f"{takers}")  # fmt: skip
            return None
        T, B = x.shape[0], x.shape[1]
        if gaps is None:
            return x.new_ones(T, B, 1)
        _check_tensor("gaps", gaps)
        shape = (B, T) if cfg.batch_first else (T, B)
        if tuple(gaps.shape) != shape:
            raise ValueError(f"gaps must have shape {shape} (as x without its features), got "
                             f"{tuple(gaps.shape)}")  # fmt: skip
        gaps = gaps.t() if cfg.batch_first else gaps
        gaps = gaps.to(x.dtype)
        if valid is not None:
            gaps = torch.where(valid[..., 0], gaps, 0.0)
        if torch.compiler.is_compiling():
            torch._assert_async((gaps >= 0).all(), "gaps must be finite and >= 0")
        elif not bool(torch.isfinite(gaps).all()) or bool((gaps < 0).any()):
            raise ValueError("gaps must be finite and >= 0 (the time from each step to the next)")
        return gaps.unsqueeze(-1)

    def _record_tallies(
        self, cell: Cell, tallies: tuple[Tensor, ...], valid: Tensor | None
    ) -> None:
        """Each tally's mean over the valid steps and the units of this forward pass; tallies
        (T, B, H) each, in the order of ``cell.tally_names``."""
        if torch.compiler.is_compiling():
            return  # recorded in eager mode only (a traced graph has no side outputs)
        means = {}
        for k, name in enumerate(cell.tally_names):
            values = tallies[k]  # (T, B, H)
            if valid is None:
                count = torch.tensor(float(values.numel()))
                means[name] = values.mean()
            else:
                v = valid.to(values.dtype)  # (T, B, 1)
                count = (v.sum() * values.shape[-1]).clamp_min(1.0)
                means[name] = (values * v).sum() / count
            if self._collected is not None:
                total = self._collected.setdefault(name, [0.0, 0.0])
                total[0] += float(means[name].detach()) * float(count)
                total[1] += float(count)
        self._tallies.append((cell, means))

    def statistics(self) -> dict[str, float]:
        """The cells' step statistics (``Cell.tally_names``) over the last forward pass: each
        the mean over its valid steps, units, layers and directions (empty for cells with
        none, and after a compiled forward)."""
        out: dict[str, list[float]] = {}
        for _, means in self._tallies:
            for name, value in means.items():
                out.setdefault(name, []).append(float(value.detach()))
        return {name: sum(v) / len(v) for name, v in out.items()}

    def penalty(self) -> Tensor | None:
        """The cells' training penalties (``Cell.penalty``) over the last forward pass, averaged
        over the cells of the stack (GateL0RD's mean over layers), differentiable; None where no
        cell has one."""
        terms = [p for cell, means in self._tallies if (p := cell.penalty(means)) is not None]
        return torch.stack(terms).mean() if terms else None

    def _torch_layer(
        self, cell: Cell, x: Tensor, state: State, valid: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """torch's own layer where it computes this cell's function with these options (no
        zoneout, no recurrent dropout in training) and, under "auto", is the faster choice."""
        from rnnlab.kernels.torchrnn import prefers_torch, torch_layer

        cfg = self.config
        weights = cell.torch_weights()
        usable = (
            weights is not None
            and cfg.zoneout == 0
            and not (self.training and cfg.recurrent_dropout > 0)
        )
        if (
            usable
            and cell.torch_kind is not None
            and (
                cfg.backend == "torch"
                or prefers_torch(cell.torch_kind, x.device, packed=_unequal(valid))
            )
        ):
            assert weights is not None
            ran = torch_layer(cell.torch_kind, x, weights, state, valid, self.training)
            if ran is not None:
                return ran
        if cfg.backend == "torch":
            raise ConfigError(
                f"the torch backend does not apply to cell {cfg.cell!r} with these options "
                f"(torch's layers are lstm, lstm-np, gru and tanh without layer_norm, zoneout, "
                f"recurrent dropout or zero lengths; layer_norm={cfg.layer_norm}, "
                f"zoneout={cfg.zoneout}, recurrent_dropout={cfg.recurrent_dropout})"
            )
        return None

    def _zoneout_masks(self, T: int, state: State, parts: int) -> Tensor | None:
        """Krueger et al. 2017, eq. 5: h_t = d_t * h_{t-1} + (1 - d_t) * h_new with d_t ~
        Bernoulli(p) per unit and step in training, and d_t = p (its expectation) in evaluation.
        All steps' masks at once, (T, B, parts * H): the first ``parts`` state tensors side by
        side (y, and c for LSTMs), drawn the same way for every backend."""
        p = self.config.zoneout
        if p == 0:
            return None
        first = state[0]
        shape = (T, first.shape[0], parts * first.shape[1])
        if self.training:
            return torch.bernoulli(first.new_full(shape, p))
        return first.new_full(shape, p)

    def _zoneout(self, new: State, old: State, zone_t: Tensor) -> State:
        """One step of zoneout on the state parts the masks cover."""
        parts = zone_t.chunk(zone_t.shape[-1] // new[0].shape[-1], dim=-1)
        zoned = [torch.lerp(n, o, d) for n, o, d in zip(new, old, parts, strict=False)]
        return tuple(zoned) + tuple(new[len(parts) :])

    def _valid_mask(self, lengths: Tensor, T: int, B: int, device: torch.device) -> Tensor:
        """(T, B, 1) bool: step t of sequence b is real."""
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be integers, got {lengths.dtype}")
        if torch.compiler.is_compiling():  # traced: the values are unknown; checked at run time
            torch._assert_async(((lengths >= 0) & (lengths <= T)).all(),
                                "lengths must lie in [0, T]")  # fmt: skip
        elif B > 0 and (int(lengths.min()) < 0 or int(lengths.max()) > T):
            raise ValueError(f"lengths must lie in [0, {T}], got {lengths.tolist()}")
        steps = torch.arange(T, device=device)
        return (steps[:, None] < lengths.to(device)[None, :]).unsqueeze(-1)

    def _initial_states(self, state: State | None, B: int, x: Tensor) -> list[State]:
        """The initial state of each (layer, direction), from the user's or zeros."""
        if state is None:
            return [cell.initial_state(B, x) for cell in self.layer_cells]
        widths = self.layer_cells[0].state_widths
        n = len(self.cells)
        H = self.config.hidden_size
        if isinstance(state, Tensor):
            state = (state,)
        if len(state) != len(widths):
            extra = ""
            if self.config.norm != "none":
                added = len(widths) - self.layer_cells[0].core_parts
                what = "a clock and the window" if added > 1 else "a clock"
                extra = (f" (norm={self.config.norm!r} adds parts after the cell's own: {what}; "
                         "pass the state a previous call returned)")  # fmt: skip
            raise ValueError(
                f"cell {self.config.cell!r} has {len(widths)} state part(s), got {len(state)}"
                + extra
            )
        for part, w in zip(state, widths, strict=True):
            if tuple(part.shape) != (n, B, w * H):
                raise ValueError(
                    f"initial state part has shape {tuple(part.shape)}, expected {(n, B, w * H)}"
                )
        return [tuple(part[k] for part in state) for k in range(n)]

    # --- conversion from and to torch.nn ------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.Module) -> Recurrent:
        """Build the same function from ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` (tanh), any number of
        layers and directions; weights are copied (LSTM and RNN biases b_ih + b_hh are added)."""
        if isinstance(module, nn.LSTM):
            if module.proj_size:
                raise ConfigError("nn.LSTM with proj_size > 0 has no rnnlab equivalent")
            name = "lstm"
        elif isinstance(module, nn.GRU):
            name = "gru"
        elif isinstance(module, nn.RNN):
            if module.nonlinearity != "tanh":
                raise ConfigError(f"nn.RNN with nonlinearity={module.nonlinearity!r}: only tanh")
            name = "tanh"
        else:
            raise ConfigError(
                f"from_torch takes nn.LSTM, nn.GRU or nn.RNN, got {type(module).__name__}"
            )
        layer = cls(
            name,
            module.input_size,
            module.hidden_size,
            module.num_layers,
            bidirectional=module.bidirectional,
            dropout=float(module.dropout),
            batch_first=module.batch_first,
        )
        ref = next(module.parameters())
        layer.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for k, cell in enumerate(layer.layer_cells):
                sfx = _torch_suffix(k, layer.num_directions)
                cell.weight_ih.copy_(getattr(module, "weight_ih" + sfx))
                cell.weight_hh.copy_(getattr(module, "weight_hh" + sfx))
                if not module.bias:
                    cell.bias.zero_()
                    if name == "gru":
                        cast(GRUCell, cell).bias_hh.zero_()
                    continue
                b_ih, b_hh = getattr(module, "bias_ih" + sfx), getattr(module, "bias_hh" + sfx)
                if name == "gru":
                    cell.bias.copy_(b_ih)
                    cast(GRUCell, cell).bias_hh.copy_(b_hh)
                else:
                    cell.bias.copy_(b_ih + b_hh)
        return layer

    def to_torch(self) -> nn.Module:
        """The equivalent ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``, where torch can express it."""
        cfg = self.config
        if cfg.cell not in _TORCH_EQUIVALENT:
            raise ConfigError(
                f"cell {cfg.cell!r} has no torch.nn equivalent; "
                f"to_torch supports {', '.join(_TORCH_EQUIVALENT)}"
            )
        extras = [k for k in ("layer_norm", "recurrent_dropout", "zoneout", "quant_bits")
                  if getattr(cfg, k)] + (["norm"] if cfg.norm != "none" else [])  # fmt: skip
        if extras:
            raise ConfigError(f"torch.nn cannot express {', '.join(extras)}; to_torch refused")
        module = _TORCH_EQUIVALENT[cfg.cell](
            cfg.input_size,
            cfg.hidden_size,
            cfg.num_layers,
            batch_first=cfg.batch_first,
            dropout=cfg.dropout,
            bidirectional=cfg.bidirectional,
        )
        ref = self.layer_cells[0].weight_ih
        module.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for k, cell in enumerate(self.layer_cells):
                sfx = _torch_suffix(k, self.num_directions)
                getattr(module, "weight_ih" + sfx).copy_(cell.weight_ih)
                getattr(module, "weight_hh" + sfx).copy_(cell.weight_hh)
                getattr(module, "bias_ih" + sfx).copy_(cell.bias)
                b_hh = (
                    cast(GRUCell, cell).bias_hh
                    if cfg.cell == "gru"
                    else torch.zeros_like(cell.bias)
                )
                getattr(module, "bias_hh" + sfx).copy_(b_hh)
        return module


def _on_gpu(x: Tensor) -> bool:
    """Whether a layer's input lies on a CUDA device, so its cell's GPU kernels apply (tests
    replace this to run those kernels on the CPU in Triton's interpreter)."""
    return x.device.type == "cuda"


def _reversed_gaps(gaps: Tensor, lengths: Tensor | None) -> Tensor:
    """The gaps (T, B, 1) a backward direction sees: its step k is step j = L - 1 - k, whose
    next step backwards is j - 1, gaps[j - 1] earlier; its last step (j = 0) has gap 0."""
    earlier = torch.cat([torch.zeros_like(gaps[:1]), gaps[:-1]])  # earlier[j] = gaps[j - 1]
    return reverse_padded(earlier, lengths)


def _fused_status() -> str:
    from rnnlab.kernels import cpu

    return cpu.unavailable_reason() or "built"


def _torch_suffix(k: int, num_directions: int) -> str:
    """torch.nn's parameter suffix for cell k = layer * num_directions + direction."""
    layer, direction = divmod(k, num_directions)
    return f"_l{layer}" + ("_reverse" if direction else "")


def prepare_backends(module: nn.Module) -> None:
    """Build the fused CPU extension now (once per version, announced on stderr) if a
    ``Recurrent`` inside ``module`` may use it, so that the build happens before a caller starts
    its clock rather than inside the first forward."""
    wants = any(isinstance(m, Recurrent) and m.config.backend != "step" for m in module.modules())
    if wants and all(p.device.type == "cpu" for p in module.parameters()):
        from rnnlab.kernels import cpu

        cpu.extension()


@contextmanager
def collecting_statistics(model: nn.Module) -> Iterator[dict[str, float]]:
    """The cells' step statistics (``Cell.tally_names``) over every forward pass of every
    ``Recurrent`` in ``model`` while the block runs (an evaluation, say): on exit the dict it
    yields holds each statistic's mean over all valid steps and units seen."""
    stacks = [m for m in model.modules() if isinstance(m, Recurrent)]
    result: dict[str, float] = {}
    for stack in stacks:
        stack._collected = {}
    try:
        yield result
    finally:
        totals: dict[str, list[float]] = {}
        for stack in stacks:
            for name, (total, count) in (stack._collected or {}).items():
                acc = totals.setdefault(name, [0.0, 0.0])
                acc[0] += total
                acc[1] += count
            stack._collected = None
        result.update({name: t / c for name, (t, c) in totals.items() if c > 0})


def model_penalty(model: nn.Module) -> Tensor | None:
    """The sum of ``Recurrent.penalty()`` over the stacks in ``model`` after its last forward
    pass (the cells' training penalties: GateL0RD's L0 term), or None where there is none."""
    terms = [
        p for m in model.modules() if isinstance(m, Recurrent) and (p := m.penalty()) is not None
    ]
    return torch.stack(terms).sum() if terms else None
