"""Polyphonic music, next-frame prediction (Boulanger-Lewandowski et al. 2012): ``rnn`` predicts
each frame's 88 keys as independent Bernoullis, ``rnn-nade`` with a NADE over the keys whose
biases the recurrent state sets. Both are scored by the NLL per frame (every frame counts, the
first too; DESIGN.md) and sample MIDI files and piano rolls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from rnnlab.data import Batch, load_polyphonic, make_batches, split_windows, to_tensors
from rnnlab.data.polyphonic import BUNDLED, is_polyphonic
from rnnlab.errors import DataError
from rnnlab.families.base import (
    WIDTH,
    Family,
    Problem,
    RecurrentOptions,
    SampleRequest,
    Score,
    TrainOptions,
    model_config,
    option,
)
from rnnlab.metrics import evaluate_nll
from rnnlab.models.rnn import RNNPredictor

FRAME_NLL = Score("nll", "NLL", "nats/frame")
DEFAULT_FRAMES = 200  # what `rnnlab sample` draws without --frames


@dataclass(frozen=True)
class RNNConfig(TrainOptions, RecurrentOptions):
    """An RNN with a factorised Bernoulli output over the 88 keys. The defaults are a
    regularised model that does well on JSB Chorales (GRU, 200 units, dropout 0.3, Adam)."""

    family: ClassVar[str] = "rnn"
    window: int = option(
        0,
        "train on windows of this many frames, each from a zero state (0: whole pieces); "
        "evaluation always uses whole pieces",
        "data",
        low=0,
    )


@dataclass(frozen=True)
class NADEConfig(RNNConfig):
    """An RNN-NADE: the same recurrence with a NADE output (Boulanger-Lewandowski et al.)."""

    family: ClassVar[str] = "rnn-nade"
    nade_size: int = option(150, "hidden units of the NADE output", positive=True, high=WIDTH)


def load_sequences(data: str) -> dict[str, list[torch.Tensor]]:
    rolls = load_polyphonic(data)
    return {split: to_tensors(pieces) for split, pieces in rolls.splits.items()}


def describe_rolls(data: str, sets: dict[str, list[torch.Tensor]]) -> dict[str, Any]:
    return {"data": data, "frame_size": int(sets["train"][0].shape[-1]),
            **{f"{k}_pieces": len(v) for k, v in sets.items()},
            **{f"{k}_frames": int(sum(len(p) for p in v)) for k, v in sets.items()}}  # fmt: skip


class MusicProblem(Problem):
    """Next-frame prediction on polyphonic music: NLL per frame."""

    def __init__(self, cfg: Any, model: nn.Module) -> None:
        self.cfg = cfg
        self.data = load_sequences(cfg.data)
        frame_size = self.data["train"][0].shape[-1]
        expected = model.config.frame_size  # type: ignore[union-attr]
        if frame_size != expected:
            raise DataError(
                f"{cfg.data}: frames have {frame_size} units, the model expects {expected}"
            )
        self.first_inputs: list[torch.Tensor] | None = None
        if getattr(cfg, "window", 0):
            # Windows give more updates per epoch on long pieces (truncated backpropagation
            # without carrying the state); each window's first input is the true previous frame.
            self.data["train"], self.first_inputs = split_windows(self.data["train"], cfg.window)
        self.model = model

    def assets(self) -> dict[str, Any]:
        return {"data": describe_rolls(self.cfg.data, self.data)}

    def train_batches(self, epoch: int) -> Iterable[Batch]:
        # The shuffle of each epoch depends only on (seed, epoch): resuming reproduces it exactly.
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return make_batches(self.data["train"], self.cfg.batch_size, shuffle=True,
                            generator=generator, first_inputs=self.first_inputs)  # fmt: skip

    def batch_loss(self, batch: Batch) -> tuple[torch.Tensor, float, float]:
        out = self.model(batch.x, batch.lengths, batch.first_input)
        return out.nll_per_frame, -float(out.total.detach()), batch.num_frames

    def evaluate(self, split: str) -> dict[str, Any]:
        result = evaluate_nll(self.model, self.data[split])  # type: ignore[arg-type]
        return {"score": result.nll, "frames": result.frames}

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        return {"valid_nll": valid.get("score"), "test_nll": test.get("score")}


class MusicFamily(Family):
    """Shared by the music families: data, sampling to MIDI and piano rolls."""

    score = FRAME_NLL
    draws = "frames"

    def accepts(self, data: str, options: dict[str, Any]) -> bool:
        return is_polyphonic(data)

    def data_help(self) -> str:
        return (f"a bundled set ({', '.join(BUNDLED)}), a set made by `rnnlab data import-midi`"
                ", or a .mat/.pickle/.npz file of piano rolls")  # fmt: skip

    def known_data(self) -> list[str]:
        return list(BUNDLED)

    def sample(self, model: nn.Module, cfg: Any, assets: dict[str, Any],
               request: SampleRequest) -> list[str]:  # fmt: skip
        return sample_music(model, request)


def sample_music(model: nn.Module, request: SampleRequest) -> list[str]:
    """A piece drawn from the model: a MIDI file and/or a piano-roll picture."""
    from rnnlab.data.midi import plot_roll, write_midi

    generator = torch.Generator().manual_seed(request.seed)
    frames = request.frames or DEFAULT_FRAMES
    draw = model.sample(frames, batch_size=1, generator=generator)  # type: ignore[operator]
    roll = draw[0].cpu().numpy().astype(bool)
    lines = []
    if request.out is not None:
        write_midi(roll, request.out, request.frames_per_beat, request.bpm)
        lines.append(f"MIDI: {request.out} ({frames} frames, "
                     f"{roll.sum(1).mean():.1f} notes a frame)")  # fmt: skip
    if request.png is not None:
        plot_roll(roll, request.png, f"{request.run_label}, seed {request.seed}")
        lines.append(f"piano roll: {request.png}")
    return lines


class RNN(MusicFamily):
    name = "rnn"
    title = "music: an RNN predicting each frame's keys as independent Bernoullis"
    config_type = RNNConfig

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        frames = int(assets.get("data", {}).get("frame_size", 88))
        return RNNPredictor(model_config(cfg, "rnn", "bernoulli", frame_size=frames))

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        return MusicProblem(cfg, self.build_model(cfg, assets or {}))


class RNNNADE(RNN):
    name = "rnn-nade"
    title = "music: an RNN-NADE (Boulanger-Lewandowski et al. 2012), exact likelihood"
    config_type = NADEConfig
    implied_by_data = False

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        frames = int(assets.get("data", {}).get("frame_size", 88))
        model_cfg = model_config(cfg, "rnn", "nade", frame_size=frames,
                                       nade_size=cfg.nade_size)  # fmt: skip
        return RNNPredictor(model_cfg)
