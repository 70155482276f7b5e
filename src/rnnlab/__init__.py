"""rnnlab: recurrent sequence models, a cell zoo behind one API, and a command-line lab."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rnnlab.cells import CellOptions, cell_names
from rnnlab.recurrent import Recurrent, RecurrentConfig

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"


def load(run: str | Path) -> nn.Module:
    """The trained model of a run directory, ready to use: its best-validation weights, in
    evaluation mode (text models carry their vocabulary as ``model.vocab``, series models their
    normalisation), for any model family.

    >>> model = rnnlab.load("runs/jsb-gru")  # doctest: +SKIP
    """
    from rnnlab.train.rundir import load as load_model

    return load_model(run)


__all__ = ["CellOptions", "Recurrent", "RecurrentConfig", "__version__", "cell_names", "load"]
