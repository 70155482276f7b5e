"""``gcnn``: the gated convolutional network of Dauphin et al. 2017 (``rnnlab.models.gcnn``)
on the polyphonic music sets, with the ``rnn`` and ``tcn`` families' problem: frame t's 88 keys
predicted as independent Bernoullis from frames < t, scored by the NLL per frame (the first
frame too), so that `rnnlab compare` sets a GCNN run beside a TCN or an LSTM run on the same
split and metric. Data, scoring and sampling to MIDI are the music families'.

The defaults are a small model for a CPU (Dauphin et al. trained language models only): a 1x1
projection of the keys to 128 channels, 4 plain gated residual blocks of kernel 4 (receptive
field R = 1 + 2 (k - 1) L = 25 frames; with --bottleneck, 1 + (k - 1) L = 13), dropout 0.25
after every GLU and before the output (the tcn family's), Adam at 1e-3 and Dauphin et al.'s
gradient clipping at 0.1 (Sec. 4.2). A GCNN has no recurrence: the recurrent options of the
music families (--cell, --layer-norm, --zoneout, --backend, ...) and --window are no fields of
its config, so the command line refuses them in one line rather than dropping them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from rnnlab.errors import ConfigError
from rnnlab.families.base import (
    LAYERS,
    WIDTH,
    FamilyConfig,
    Problem,
    TrainOptions,
    default,
    option,
    score_text,
    tail,
)
from rnnlab.families.music import MusicFamily, MusicProblem
from rnnlab.models.gcnn import GCNNConfig, GCNNPredictor


@dataclass(frozen=True)
class GatedBlockOptions(FamilyConfig):
    """The block choice of Dauphin et al.'s gated networks, shared by ``gcnn`` and ``gcnn-lm``
    (a config that mixes it in has ``hidden_size``, the blocks' channels)."""

    bottleneck: bool = option(False, "bottleneck blocks: 1x1 GLU to C/4, a GLU of the kernel "
                              "size, 1x1 GLU back (Dauphin et al. Sec. 2)")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        channels = getattr(self, "hidden_size", 4)
        if self.bottleneck and channels < 4:
            raise ConfigError(f"bottleneck blocks need at least 4 channels, got {channels}")


@dataclass(frozen=True)
class GCNNFamilyConfig(TrainOptions, GatedBlockOptions):
    """A GCNN over the previous frames with a factorised Bernoulli output over the 88 keys."""

    family: ClassVar[str] = "gcnn"
    hidden_size: int = option(128, "channels of the input projection and of every block",
                              positive=True, high=WIDTH)  # fmt: skip
    num_layers: int = option(4, "gated residual blocks (receptive field: 1 + 2 (k-1) blocks "
                             "frames; 1 + (k-1) blocks with --bottleneck)", positive=True,
                             high=LAYERS)  # fmt: skip
    kernel_size: int = option(4, "kernel size of every causal gated convolution", low=2,
                              high=64)  # fmt: skip
    dropout: float = option(0.25, "dropout after every GLU and before the output", low=0.0,
                            below=1.0)  # fmt: skip
    lr: float = default(TrainOptions, "lr", 1e-3)
    clip: float = default(TrainOptions, "clip", 0.1)


def gcnn_config(cfg: GCNNFamilyConfig, frame_size: int) -> GCNNConfig:
    return GCNNConfig(frame_size=frame_size, hidden_size=cfg.hidden_size,
                      num_layers=cfg.num_layers, kernel_size=cfg.kernel_size,
                      dropout=cfg.dropout, bottleneck=cfg.bottleneck)  # fmt: skip


class GCNNFamily(MusicFamily):
    name = "gcnn"
    title = "music: a gated convolutional network (Dauphin et al. 2017), Bernoulli keys"
    config_type = GCNNFamilyConfig
    implied_by_data = False

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        frames = int(assets.get("data", {}).get("frame_size", 88))
        return GCNNPredictor(gcnn_config(cfg, frames))

    def summary(self, result: dict[str, Any], out: Path) -> str:
        kind = "bottleneck" if result.get("bottleneck") else "gated"
        return (
            f"{result['data']} gcnn ({result['num_layers']} {kind} blocks of "
            f"{result['hidden_size']}): {score_text(self.score, result)}; {tail(result, out)}"
        )

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        return MusicProblem(cfg, self.build_model(cfg, assets or {}))
