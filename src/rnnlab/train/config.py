"""Training configuration and the resolved run configuration written to config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rnnlab.errors import ConfigError, unknown_name
from rnnlab.losses import KL_SCHEDULES
from rnnlab.models.rnn import ModelConfig

OPTIMIZERS = ("adam", "rmsprop", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. Each field's ``help`` is also its command-line help."""

    data: str = field(
        default="jsb",
        metadata={
            "help": "bundled music set, a .mat/.pickle/.npz path, or a long-lag task "
            "(`rnnlab data list`)"
        },
    )
    optimizer: str = field(default="adam", metadata={"help": "adam, rmsprop (Chung et al.) or sgd"})
    lr: float = field(default=3e-3, metadata={"help": "initial learning rate"})
    momentum: float = field(default=0.0, metadata={"help": "momentum (rmsprop and sgd)"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty"})
    batch_size: int = field(default=16, metadata={"help": "sequences per batch"})
    window: int = field(
        default=0,
        metadata={
            "help": "train on windows of this many frames, each from a zero state "
            "(0: whole pieces); evaluation always uses whole pieces"
        },
    )
    epochs: int = field(default=200, metadata={"help": "maximum number of epochs"})
    weight_noise: float = field(
        default=0.0,
        metadata={
            "help": "std of Gaussian noise added to every weight matrix at each training "
            "step (Graves 2011; Chung et al. 2014 used 0.075)"
        },
    )
    clip: float = field(default=1.0, metadata={"help": "max gradient norm (0: no clipping)"})
    patience: int = field(
        default=20,
        metadata={"help": "stop after this many epochs without a better valid NLL (0: never)"},
    )
    lr_decay: float = field(default=0.5, metadata={"help": "LR factor on a validation plateau"})
    lr_patience: int = field(
        default=5, metadata={"help": "epochs without improvement before the LR decays"}
    )
    min_lr: float = field(default=1e-5, metadata={"help": "the LR never decays below this"})
    seq_len: int = field(
        default=0,
        metadata={"help": "long-lag tasks: the sequence length T (0: the task's default)"},
    )
    delay: int = field(default=0, metadata={"help": "recall task: the lag k (0: 10)"})
    train_size: int = field(
        default=0,
        metadata={"help": "long-lag tasks: fresh training sequences per epoch (0: 100 batches)"},
    )
    test_size: int = field(
        default=2560, metadata={"help": "long-lag tasks: test sequences (Hochreiter's 2560)"}
    )
    bptt: int = field(default=35, metadata={"help": "text: truncated BPTT window (tokens)"})
    data_dir: str = field(
        default="", metadata={"help": "text: the corpus directory (else $RNNLAB_DATA, the cache)"}
    )
    lr_decay_start: int = field(
        default=0,
        metadata={
            "help": "after this epoch multiply the LR by --lr-decay every epoch (Zaremba's "
            "schedule); 0: decay on validation plateaus instead"
        },
    )
    kl_anneal: int = field(
        default=0,
        metadata={"help": "VRNN: the KL weight grows linearly from 0 to 1 over this many epochs"},
    )
    kl_schedule: str = field(
        default="linear",
        metadata={"help": "sentence VAE: KL annealing, linear, logistic or cyclical"},
    )
    free_bits: float = field(
        default=0.0, metadata={"help": "sentence VAE: minimum KL per latent unit (nats)"}
    )
    max_len: int = field(
        default=0,
        metadata={"help": "sentence VAE: train on sentences of at most this many words (0: all)"},
    )
    iw_samples: int = field(
        default=100,
        metadata={"help": "VRNN: samples k of the importance-weighted test NLL estimate"},
    )
    seed: int = field(default=0, metadata={"help": "seed of every random choice"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        if self.kl_schedule not in KL_SCHEDULES:
            raise unknown_name("KL schedule", self.kl_schedule, KL_SCHEDULES)
        positive = ("lr", "batch_size", "epochs", "test_size", "iw_samples", "bptt")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        for key in (
            "weight_noise",
            "clip",
            "weight_decay",
            "momentum",
            "patience",
            "lr_patience",
            "threads",
            "window",
            "seq_len",
            "delay",
            "train_size",
            "kl_anneal",
            "lr_decay_start",
            "free_bits",
            "max_len",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative, got {getattr(self, key)}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; written to RUN/config.json."""

    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"model": asdict(self.model), "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        if set(data) != {"model", "train"}:
            raise ConfigError(f"a run config has the keys 'model' and 'train', got {sorted(data)}")
        return cls(ModelConfig.from_dict(data["model"]), train_config_from_dict(data["train"]))


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown training config key(s) {unknown}; known: {sorted(known)}")
    return TrainConfig(**data)
