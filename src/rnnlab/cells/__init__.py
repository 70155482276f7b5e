"""The cell zoo: every registered cell by name (``cell_names()``) and its constructor."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

import torch

from rnnlab.cells.arma import ARMACell
from rnnlab.cells.base import Cell, CellOptions, State
from rnnlab.cells.bru import BRUCell
from rnnlab.cells.cru import CRUCell
from rnnlab.cells.egru import EGRUCell
from rnnlab.cells.gatel0rd import GateL0RDCell
from rnnlab.cells.gru import GRUCell, GRUv1Cell
from rnnlab.cells.lstm import VARIANTS, LSTMCell, LSTMVariant
from rnnlab.cells.ncgru import NCGRUCell
from rnnlab.cells.rnn import TanhCell
from rnnlab.cells.s5 import S5Cell
from rnnlab.cells.scan import MinGRUCell, MinLSTMCell
from rnnlab.cells.spiking import AdLIFCell, RadLIFCell
from rnnlab.cells.srgru import SRGRUCell
from rnnlab.cells.srlstm import SRLSTMCell
from rnnlab.errors import unknown_name

CellFactory = Callable[[int, int, CellOptions], Cell]

CELLS: dict[str, CellFactory] = {
    "tanh": TanhCell,
    "gru": GRUCell,
    "gru-v1": GRUv1Cell,
    **{name: partial(LSTMCell, variant=variant) for name, variant in VARIANTS.items()},
    "mingru": MinGRUCell,
    "minlstm": MinLSTMCell,
    "egru": EGRUCell,
    "gatel0rd": GateL0RDCell,
    "nc-gru": NCGRUCell,
    "adlif": AdLIFCell,
    "radlif": RadLIFCell,
    "s5": S5Cell,
    "bru": BRUCell,
    "arma": ARMACell,
    "sr-gru": SRGRUCell,
    "sr-lstm": SRLSTMCell,
    "cru": CRUCell,
}


def cell_names() -> list[str]:
    """Every registered cell name."""
    return list(CELLS)


@cache
def probe_cell(name: str) -> Cell:
    """A 1 x 1 instance of the cell, to read its traits (what it takes, its arguments) from. Made
    with the random generator's state saved and restored, so that asking never changes the draws
    of a seeded model built afterwards."""
    if name not in CELLS:
        raise unknown_name("cell", name, CELLS)
    with torch.random.fork_rng(devices=[]):
        return CELLS[name](1, 1, CellOptions())


def make_cell(name: str, input_size: int, hidden_size: int, options: CellOptions) -> Cell:
    """Build a cell by name; an unknown name gets the list of valid ones."""
    if name not in CELLS:
        raise unknown_name("cell", name, CELLS)
    return CELLS[name](input_size, hidden_size, options)


__all__ = [
    "ARMACell",
    "AdLIFCell",
    "BRUCell",
    "CELLS",
    "Cell",
    "CellOptions",
    "CRUCell",
    "EGRUCell",
    "GateL0RDCell",
    "GRUCell",
    "GRUv1Cell",
    "LSTMCell",
    "LSTMVariant",
    "MinGRUCell",
    "MinLSTMCell",
    "NCGRUCell",
    "RadLIFCell",
    "S5Cell",
    "SRGRUCell",
    "SRLSTMCell",
    "State",
    "TanhCell",
    "cell_names",
    "make_cell",
    "probe_cell",
]
