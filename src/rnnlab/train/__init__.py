"""Training, evaluation and run directories (family-agnostic: see rnnlab.families)."""

from rnnlab.train.loop import train_run, train_step
from rnnlab.train.rundir import LoadedRun, load, load_run

__all__ = ["LoadedRun", "load", "load_run", "train_run", "train_step"]
