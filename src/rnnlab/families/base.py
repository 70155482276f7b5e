"""The plugin contract of a model family, and the options families share.

A family is one module of ``rnnlab.families`` holding three things:

- a **config**: a frozen dataclass built from the shared option groups below (``TrainOptions``,
  ``RecurrentOptions``) and its own fields, with its own defaults. Every field is an option of
  ``rnnlab train --model NAME`` (its ``help`` and ``group`` come from the field's metadata), so a
  family that cannot honour an option simply has no such field and the option is refused;
- a **Problem**: what one run trains, built from a config (and, for a run directory, the assets it
  stored): the model, the training batches, the loss, the evaluation of a split (its ``score``),
  the result fields, and the assets that make a run directory self-contained (vocabulary, data
  description, normalisation statistics);
- a **Family** object, registered in ``rnnlab.families.FAMILIES``: its name, config type, score
  (name, label, unit, direction), which ``--data`` values imply it, the summary line, and what it
  can generate (``sample`` / ``generate`` commands).

The trainer, the CLI, ``compare``, the study runner and the report only call these; none of them
compares a family's name.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from rnnlab.cells import CELLS, probe_cell
from rnnlab.cells.norms import NORMS
from rnnlab.device import check_device
from rnnlab.errors import ConfigError, unknown_name
from rnnlab.models.rnn import ModelConfig
from rnnlab.recurrent import BACKENDS, parse_cell_args

OPTIMIZERS = ("adam", "rmsprop", "sgd")
GROUPS = ("data", "model", "training", "evaluation", "system")
WIDTH, LAYERS = 65_536, 64  # the largest layer width and depth a config may ask for


def option(
    default: Any,
    help: str,
    group: str = "model",
    *,
    choices: Sequence[str] | Callable[[], Iterable[str]] | None = None,
    low: float | None = None,
    positive: bool = False,
    below: float | None = None,
    requires: dict[str, tuple[Any, ...]] | None = None,
    high: float | None = None,
) -> Any:
    """A config field with its command-line help and its checks: ``choices`` (names, or a function
    giving them), ``low`` (inclusive minimum), ``positive``, ``below`` (exclusive maximum), and
    ``requires`` ({other field: values}: the option only means something when the other field
    has one of those values; giving it otherwise is an error) and ``high`` (inclusive maximum:
    sizes are bounded so that a crafted config is refused before anything is allocated)."""
    assert group in GROUPS, group
    meta = {"help": help, "group": group, "choices": choices, "low": low, "positive": positive,
            "below": below, "requires": requires or {}, "high": high}  # fmt: skip
    return field(default=default, metadata=meta)


def default(cls: type, name: str, value: Any) -> Any:
    """The field ``name`` of a shared option group with a family's own default."""
    base: Field[Any] = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    return field(default=value, metadata=base.metadata)


def choices_of(f: Field[Any]) -> list[str] | None:
    spec = f.metadata.get("choices")
    if spec is None:
        return None
    return list(spec() if callable(spec) else spec)


@dataclass(frozen=True)
class FamilyConfig:
    """The base of every family's config: type and range checks driven by field metadata, and
    conversion from a JSON dictionary that rejects unknown keys."""

    family: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _coerce(f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)  # 1 where a float is expected is 1.0
            _check_field(f, value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{cls.family}: unknown option(s) {unknown}; its options: {sorted(known)}"
            )
        return cls(**{k: _coerce(known[k], v) for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def check_given(self, given: Iterable[str]) -> None:
        """Refuse an option the user gave that means nothing with the other options chosen."""
        by_name = {f.name: f for f in fields(self)}
        for name in given:
            for other, values in by_name[name].metadata.get("requires", {}).items():
                if getattr(self, other) not in values:
                    need = " or ".join(f"--{other.replace('_', '-')} {v}" for v in values)
                    raise ConfigError(
                        f"--{name.replace('_', '-')} applies only with {need} "
                        f"(this {self.family} run has {other} {getattr(self, other)!r})"
                    )


def field_type(f: Field[Any]) -> type:
    return {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]


def _coerce(f: Field[Any], value: Any) -> Any:
    """JSON's numbers: an integer where a float is expected is that float."""
    if field_type(f) is float and type(value) is int:
        return float(value)
    return value


def _check_field(f: Field[Any], value: Any) -> None:
    kind, meta, name = field_type(f), f.metadata, f.name
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{name} must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    names = choices_of(f)
    if names is not None and value not in names:
        raise unknown_name(name.replace("_", " "), value, names)
    if meta.get("positive") and value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    if meta.get("low") is not None and value < meta["low"]:
        raise ConfigError(f"{name} must be at least {meta['low']}, got {value}")
    if meta.get("high") is not None and value > meta["high"]:
        raise ConfigError(f"{name} must be at most {meta['high']:,}, got {value:,}")
    if meta.get("below") is not None and value >= meta["below"]:
        raise ConfigError(f"{name} must be below {meta['below']}, got {value}")


SEED_MAX = 2**31 - 1  # every generator rnnlab seeds (torch, numpy, Optuna's) takes it


# --- the option groups families share --------------------------------------------------------
@dataclass(frozen=True)
class TrainOptions(FamilyConfig):
    """How any model is trained."""

    data: str = option("jsb", "the dataset: a name (`rnnlab data list`) or a file", "data")
    optimizer: str = option("adam", "adam, rmsprop (Chung et al.) or sgd", "training",
                            choices=OPTIMIZERS)  # fmt: skip
    lr: float = option(3e-3, "initial learning rate", "training", positive=True)
    momentum: float = option(0.0, "momentum (rmsprop and sgd)", "training", low=0.0, below=1.0,
                             requires={"optimizer": ("rmsprop", "sgd")})  # fmt: skip
    weight_decay: float = option(0.0, "L2 penalty", "training", low=0.0)
    batch_size: int = option(16, "sequences per batch", "training", positive=True, high=10**6)
    epochs: int = option(200, "maximum number of epochs", "training", positive=True, high=10**6)
    weight_noise: float = option(
        0.0,
        "std of Gaussian noise added to every weight matrix at each training step (Graves "
        "2011; Chung et al. 2014 used 0.075)",
        "training",
        low=0.0,
    )
    clip: float = option(1.0, "max gradient norm (0: no clipping)", "training", low=0.0)
    patience: int = option(
        20, "stop after this many epochs without a better validation score (0: never)",
        "training", low=0,
    )  # fmt: skip
    lr_decay: float = option(0.5, "LR factor on a validation plateau (or per epoch, see "
                             "--lr-decay-start)", "training", positive=True, low=None)  # fmt: skip
    lr_patience: int = option(5, "epochs without improvement before the LR decays", "training",
                              low=0)  # fmt: skip
    min_lr: float = option(1e-5, "the LR never decays below this", "training", low=0.0)
    lr_decay_start: int = option(
        0,
        "after this epoch multiply the LR by --lr-decay every epoch (Zaremba's schedule); "
        "0: decay on validation plateaus instead",
        "training",
        low=0,
    )
    seed: int = option(0, "seed of every random choice", "system", low=0, high=SEED_MAX)
    threads: int = option(0, "torch CPU threads (0: torch's default)", "system", low=0,
                          high=1024)  # fmt: skip
    device: str = option("auto", "where the model runs: cpu, cuda (or cuda:N), or auto (a GPU "
                         "where torch sees one)", "system")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        check_device(self.device)  # its syntax; whether this machine has it is checked at run time
        if self.lr_decay > 1.0:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}")


@dataclass(frozen=True)
class RecurrentOptions(FamilyConfig):
    """The recurrent stack (``rnnlab.Recurrent``)."""

    cell: str = option("gru", "recurrent cell (see `rnnlab cells`)", choices=lambda: CELLS)
    hidden_size: int = option(200, "units per layer", positive=True, high=WIDTH)
    num_layers: int = option(1, "stacked recurrent layers", positive=True, high=LAYERS)
    dropout: float = option(0.3, "dropout between layers and before the output", low=0.0,
                            below=1.0)  # fmt: skip
    layer_norm: bool = option(False, "layer normalisation (Ba et al. 2016)")
    forget_bias: float = option(1.0, "initial forget-gate bias (LSTM family)")
    recurrent_dropout: float = option(
        0.0, "variational recurrent dropout (Gal & Ghahramani 2016)", low=0.0, below=1.0
    )
    zoneout: float = option(0.0, "zoneout probability (Krueger et al. 2017)", low=0.0, below=1.0)
    backend: str = option("auto", "auto (torch's own layer where it is the same function and "
                          "faster, else fused where it applies), step (the reference loop), fused "
                          "or torch", "system", choices=BACKENDS)  # fmt: skip
    chrono: int = option(0, "chrono initialisation with this T_max (Tallec & Ollivier 2018; 0: "
                         "off)", low=0)  # fmt: skip
    cell_args: str = option("", "the cell's own arguments, name=value,... (`rnnlab cells` "
                            "lists each cell's, with their defaults)")  # fmt: skip
    norm: str = option("none", "normalisation: layer (= --layer-norm), batch (recurrent batch "
                       "norm, Cooijmans et al. 2017), batch-layer (Ziaee & Cano 2022), "
                       "assorted-time (Pospisil et al. 2024); the last three on the step loop",
                       choices=NORMS)  # fmt: skip
    norm_steps: int = option(100, "time steps with their own batch statistics (--norm batch, "
                             "batch-layer; later steps use the last)", positive=True, high=WIDTH,
                             requires={"norm": ("batch", "batch-layer")})  # fmt: skip
    norm_window: int = option(5, "steps the assorted-time statistics span", positive=True,
                              high=1024, requires={"norm": ("assorted-time",)})  # fmt: skip
    quant_bits: int = option(0, "quantised training (Hubara et al. 2018): weights and outputs on "
                             "2^b - 1 levels, straight-through gradients; 2 to 16 (0: off)",
                             low=0, high=16)  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if hasattr(self, "cell"):
            parse_cell_args(self.cell, self.cell_args)  # names, types and ranges, at parse time
        if getattr(self, "quant_bits", 0) == 1:
            raise ConfigError("quant_bits must be 0 (off) or 2 to 16, got 1")
        if getattr(self, "layer_norm", False) and getattr(self, "norm", "none") not in (
            "none", "layer"):  # fmt: skip
            raise ConfigError(f"choose one normalisation: --layer-norm and --norm {self.norm}")
        for option_name in ("norm", "quant_bits"):
            on = getattr(self, option_name, None) not in (None, "none", "layer", 0)
            if on and hasattr(self, "cell"):
                reason = probe_cell(self.cell).refusal(option_name)
                if reason is not None:
                    raise ConfigError(f"cell {self.cell!r}: {reason}")


RECURRENT_KEYS = tuple(f.name for f in fields(RecurrentOptions))


def model_config(cfg: Any, model: str, output: str = "bernoulli", **extra: Any) -> ModelConfig:
    """The architecture record the models take (``rnnlab.models.rnn.ModelConfig``), from the
    recurrent options a family's config has (the neutral value for those it has not: one layer,
    no dropout) and the family's own ``extra`` fields."""
    values = {k: getattr(cfg, k) for k in RECURRENT_KEYS if hasattr(cfg, k)}
    values.setdefault("dropout", 0.0)
    return ModelConfig(model=model, output=output, **values, **extra)


# --- the score, the problem, the family -------------------------------------------------------
@dataclass(frozen=True)
class Score:
    """The number that selects a run's best epoch: ``name`` keys result.json and metrics.jsonl
    (``valid_<name>``, ``test_<name>``); ``label`` and ``unit`` head tables and axes."""

    name: str
    label: str
    unit: str
    direction: str = "minimize"

    def better(self, new: float, old: float) -> bool:
        return new < old if self.direction == "minimize" else new > old

    @property
    def worst(self) -> float:
        return math.inf if self.direction == "minimize" else -math.inf

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "label": self.label, "unit": self.unit,
                "direction": self.direction}  # fmt: skip


class Problem(ABC):
    """What one run trains: built from its config (and, for an existing run directory, the
    assets it stored), it owns the data, the model, the loss and the evaluation."""

    model: nn.Module

    def assets(self) -> dict[str, Any]:
        """What the run directory must keep to rebuild the model without the data (written to
        assets.json at the start of training): vocabulary, normalisation, data description."""
        return {}

    @abstractmethod
    def train_batches(self, epoch: int) -> Iterable[Any]:
        """The batches of one epoch, in order (a function of the seed and the epoch only)."""

    @abstractmethod
    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, float, float]:
        """(loss to minimise, the score summed over the batch, how many terms it sums)."""

    @abstractmethod
    def evaluate(self, split: str) -> dict[str, Any]:
        """At least ``{"score": ...}``; anything else is reported beside it."""

    def finalise(self) -> None:  # noqa: B027 (a hook: most problems need nothing)
        """Called once training ends, with the best-validation weights loaded (the latent
        families' importance-weighted test estimate is made here)."""

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        """The problem's own fields of result.json, from the best epoch's evaluations."""
        return {}

    def importance_weighted(self, split: str, k: int) -> dict[str, Any] | None:
        """The importance-weighted NLL of a split with k samples (latent families); None where
        the family's NLL is exact."""
        return None


@dataclass(frozen=True)
class SampleRequest:
    """What `rnnlab sample` asks of a family that draws frames or forecasts."""

    out: Path | None
    png: Path | None
    frames: int
    seed: int
    frames_per_beat: int
    bpm: float
    run_label: str


@dataclass(frozen=True)
class DecodeRequest:
    """What `rnnlab decode` asks of a recogniser: audio files, else ``n`` utterances of
    ``split``; ``beam`` 0 decodes greedily."""

    audio: tuple[Path, ...]
    split: str
    n: int
    beam: int


class Family(ABC):
    """A registered model family (see the module docstring)."""

    name: ClassVar[str]
    title: ClassVar[str]  # one line for `rnnlab train --help`
    config_type: ClassVar[type[Any]]
    score: ClassVar[Score]
    latent: ClassVar[bool] = False  # has latent variables: eval --iw-samples applies
    draws: ClassVar[str | None] = None  # "frames" (rnnlab sample) or "text" (rnnlab generate)
    sample_suffixes: ClassVar[tuple[str, ...]] = (".mid", ".midi")  # what `sample --out` writes

    implied_by_data: ClassVar[bool] = True  # data this family accepts implies it (no --model)
    portable_data: ClassVar[bool] = True  # a run can be evaluated on other data it accepts

    def accepts(self, data: str, options: dict[str, Any]) -> bool:
        """Whether this family can train on ``--data data`` (with the other ``options`` given);
        where ``implied_by_data``, such data selects it when ``--model`` is not given."""
        return False

    def data_help(self) -> str:
        """What ``--data`` takes for this family (for error messages)."""
        return "see `rnnlab data list`"

    def resolve(self, cfg: Any) -> Any:
        """The config with data-dependent values filled in (so config.json says them)."""
        return cfg

    @abstractmethod
    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        """The run's problem: data loaded, model built (assets given: the run directory's)."""

    @abstractmethod
    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        """The model alone, from the config and the stored assets (no data read)."""

    def summary(self, result: dict[str, Any], out: Path) -> str:
        """The line `rnnlab train` prints at the end of a run."""
        return f"{headline(result)}: {score_text(self.score, result)}; {tail(result, out)}"

    def eval_lines(self, split: str, figures: dict[str, Any], data: str) -> list[str]:
        s = self.score
        rest = ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items() if k != "score")
        return [f"{data} {split}: {s.label} {figures['score']:.4f} {s.unit}"
                + (f" ({rest})" if rest else "")]  # fmt: skip

    def iw_lines(self, split: str, iw: dict[str, Any], data: str) -> list[str]:
        value = iw[f"{split}_iw_nll"]
        return [f"{data} {split}: importance-weighted NLL {value:.4f} {self.score.unit} "
                f"(k={iw['iw_samples']})"]  # fmt: skip

    def known_data(self) -> list[str]:
        """Dataset names this family knows (for "did you mean" in errors)."""
        return []

    def sample(self, model: nn.Module, cfg: Any, assets: dict[str, Any],
               request: SampleRequest) -> list[str]:  # fmt: skip
        raise ConfigError(f"{self.name} runs cannot be sampled")

    def generate(self, model: nn.Module, assets: dict[str, Any], n: int, temperature: float,
                 top_k: int, seed: int, max_len: int) -> list[str]:  # fmt: skip
        raise ConfigError(f"{self.name} runs generate no text")

    def decode(self, run: Any, request: DecodeRequest) -> list[str]:
        """What `rnnlab decode` prints: a recogniser's transcription of audio files, or of a
        split's utterances beside their references (``run``: a LoadedRun)."""
        raise ConfigError(f"{self.name} runs decode nothing (`rnnlab decode` takes a ctc run)")


def affordable_samples(train_items: int, test_items: int, most: int = 100) -> int:
    """The importance-weighted test estimate's k when none is given: the estimate reads the
    test set k times forward, a training epoch the training set about three times (forward and
    backward), so k = 3 train / test makes the final evaluation cost about one epoch (at least
    1, at most ``most``).

    >>> affordable_samples(42_068, 3_761), affordable_samples(229, 77), affordable_samples(10, 1e6)
    (33, 8, 1)
    """
    return int(min(most, max(1, 3 * train_items // test_items)))


def headline(result: dict[str, Any]) -> str:
    return f"{result['data']} {result['model']}/{result['cell']}"


def tail(result: dict[str, Any], out: Path) -> str:
    return (f"{result['num_params']:,} parameters, {result['wall_time_s']:.0f} s; "
            f"run: {out}")  # fmt: skip


def score_text(score: Score, result: dict[str, Any]) -> str:
    test, valid = result.get("test_score"), result.get("valid_score")
    return (f"test {score.label} {_fmt(test)} {score.unit} at the best validation epoch "
            f"{result['best_epoch']} (valid {_fmt(valid)})")  # fmt: skip


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return "n/a" if value is None else str(value)


def field_by_name(cfg_type: type) -> dict[str, Field[Any]]:
    return {f.name: f for f in fields(cfg_type)}


def field_default(f: Field[Any]) -> Any:
    return None if f.default is MISSING else f.default
