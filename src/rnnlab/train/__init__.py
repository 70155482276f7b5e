"""Training, evaluation and checkpoints (family-agnostic: see rnnlab.families)."""

from rnnlab.metrics import NLL, evaluate_nll, frame_nll
from rnnlab.train.loop import LoadedRun, load, load_run, train_run, train_step

__all__ = [
    "NLL",
    "LoadedRun",
    "evaluate_nll",
    "frame_nll",
    "load",
    "load_run",
    "train_run",
    "train_step",
]
