"""Evaluation metrics, exactly as the literature defines them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnlab.data.batching import make_batches
from rnnlab.device import model_device, to_device
from rnnlab.models.rnn import RNNPredictor


@dataclass(frozen=True)
class NLL:
    """Mean negative log-likelihood per frame in nats, over ``frames`` frames."""

    nll: float
    frames: int


def frame_nll(total_log_prob: float, num_frames: int) -> float:
    """Boulanger-Lewandowski et al. 2012: -sum over all frames of log p(x_t | x_<t) / frames.
    Every frame counts once, whatever the length of its piece (no per-sequence averaging)."""
    return -total_log_prob / num_frames


@torch.no_grad()
def evaluate_nll(model: RNNPredictor, sequences: list[Tensor], batch_size: int = 64) -> NLL:
    """The NLL per frame of ``sequences`` under ``model`` in evaluation mode."""
    was_training = model.training
    model.eval()
    total, frames = 0.0, 0
    device = model_device(model)
    for batch in make_batches(sequences, batch_size, shuffle=False):
        batch = to_device(batch, device)
        out = model(batch.x, batch.lengths)
        total += float(out.total.double())
        frames += out.num_frames
    model.train(was_training)
    nll = frame_nll(total, frames)
    return NLL(nll if math.isfinite(nll) else math.nan, frames)
