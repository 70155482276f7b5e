"""Training, evaluation and checkpoints."""

from rnnlab.train.config import RunConfig, TrainConfig
from rnnlab.train.loop import load_run, train_run, train_step
from rnnlab.train.metrics import NLL, evaluate_nll, frame_nll

__all__ = [
    "NLL",
    "RunConfig",
    "TrainConfig",
    "evaluate_nll",
    "frame_nll",
    "load_run",
    "train_run",
    "train_step",
]
