"""``tcn``: the temporal convolutional network of Bai et al. 2018 (``rnnlab.models.tcn``) on the
polyphonic music sets, with the ``rnn`` family's problem: frame t's 88 keys predicted as
independent Bernoullis from frames < t, scored by the NLL per frame (the first frame too), so
that `rnnlab compare` sets a TCN run beside an LSTM run on the same split and metric.

The defaults are those of the authors' ``TCN/poly_music/music_test.py`` (locuslab/TCN): 4
levels of 150 channels, kernel size 5, dropout 0.25, Adam at 1e-3, gradient norm clipped at 0.2
(their batch size is 1; here the shared default, 16 pieces a batch). A TCN has no recurrence:
the recurrent options of the music families (--cell, --layer-norm, --zoneout, --backend, ...)
and --window (windows restarted from one previous frame) are no fields of its config, so the
command line refuses them in one line rather than dropping them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from rnnlab.families.base import (
    LAYERS,
    WIDTH,
    Problem,
    TrainOptions,
    default,
    option,
    score_text,
    tail,
)
from rnnlab.families.music import MusicFamily, MusicProblem
from rnnlab.models.tcn import TCNConfig, TCNPredictor


@dataclass(frozen=True)
class TCNFamilyConfig(TrainOptions):
    """A TCN over the previous frames with a factorised Bernoulli output over the 88 keys."""

    family: ClassVar[str] = "tcn"
    hidden_size: int = option(150, "channels of every residual block (Bai et al.'s --nhid)",
                              positive=True, high=WIDTH)  # fmt: skip
    num_layers: int = option(4, "residual blocks (Bai et al.'s levels; block i has dilation "
                             "2^i)", positive=True, high=LAYERS)  # fmt: skip
    kernel_size: int = option(5, "kernel size of every causal convolution (receptive field: "
                              "1 + 2 (k-1) (2^levels - 1) frames)", low=2, high=64)  # fmt: skip
    dropout: float = option(0.25, "dropout after every convolution and before the output",
                            low=0.0, below=1.0)  # fmt: skip
    lr: float = default(TrainOptions, "lr", 1e-3)
    clip: float = default(TrainOptions, "clip", 0.2)


def tcn_config(cfg: TCNFamilyConfig, frame_size: int) -> TCNConfig:
    return TCNConfig(frame_size=frame_size, hidden_size=cfg.hidden_size,
                     num_layers=cfg.num_layers, kernel_size=cfg.kernel_size,
                     dropout=cfg.dropout)  # fmt: skip


class TCNFamily(MusicFamily):
    name = "tcn"
    title = "music: a temporal convolutional network (Bai et al. 2018), Bernoulli keys"
    config_type = TCNFamilyConfig
    implied_by_data = False

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        frames = int(assets.get("data", {}).get("frame_size", 88))
        return TCNPredictor(tcn_config(cfg, frames))

    def summary(self, result: dict[str, Any], out: Path) -> str:
        return (
            f"{result['data']} tcn ({result['num_layers']} levels of "
            f"{result['hidden_size']}): {score_text(self.score, result)}; {tail(result, out)}"
        )

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        return MusicProblem(cfg, self.build_model(cfg, assets or {}))
