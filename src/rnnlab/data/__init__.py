"""Datasets and batching."""

from rnnlab.data.batching import Batch, make_batches, split_windows, to_tensors
from rnnlab.data.polyphonic import (
    BUNDLED,
    NUM_KEYS,
    PianoRolls,
    dataset_names,
    load_polyphonic,
)

__all__ = [
    "BUNDLED",
    "NUM_KEYS",
    "Batch",
    "PianoRolls",
    "dataset_names",
    "load_polyphonic",
    "make_batches",
    "split_windows",
    "to_tensors",
]
