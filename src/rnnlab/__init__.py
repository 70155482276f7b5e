"""rnnlab: recurrent sequence models, a cell zoo behind one API, and a command-line lab."""

from rnnlab.cells import CellOptions, cell_names
from rnnlab.recurrent import Recurrent, RecurrentConfig

__version__ = "0.1.0"

__all__ = ["CellOptions", "Recurrent", "RecurrentConfig", "__version__", "cell_names"]
