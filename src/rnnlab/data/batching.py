"""Padded batches of variable-length sequences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence


@dataclass
class Batch:
    """x (B, T, D) zero-padded, lengths (B,) int64; first_input (B, D): the frame before each
    sequence (for windows cut from a longer piece), None when every sequence starts a piece."""

    x: Tensor
    lengths: Tensor
    first_input: Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())


def to_tensors(pieces: list[np.ndarray], dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Convert rolls once, so that batching an epoch costs no conversion."""
    return [torch.from_numpy(np.ascontiguousarray(p)).to(dtype) for p in pieces]


def split_windows(sequences: list[Tensor], window: int) -> tuple[list[Tensor], list[Tensor]]:
    """Cut every sequence into consecutive windows of at most ``window`` frames; also return the
    frame before each window (zeros at the start of a piece), which is the window's first input."""
    windows, previous = [], []
    for seq in sequences:
        for start in range(0, len(seq), window):
            windows.append(seq[start : start + window])
            previous.append(seq[start - 1] if start > 0 else torch.zeros_like(seq[0]))
    return windows, previous


def make_batches(
    sequences: list[Tensor],
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    first_inputs: list[Tensor] | None = None,
) -> list[Batch]:
    """Group sequences of similar length, so that little time goes into padding.

    Without shuffling, sequences are sorted by length. With it, each length is jittered by up to
    +-10% before sorting (so batches differ from epoch to epoch) and the batch order is shuffled;
    all randomness comes from ``generator``, which makes an epoch reproducible from its seed.
    """
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.float64)
    if shuffle:
        jitter = torch.rand(len(sequences), generator=generator, dtype=torch.float64)
        lengths = lengths * (0.9 + 0.2 * jitter)
    order = torch.argsort(lengths, stable=True).tolist()
    groups = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    if shuffle:
        groups = [groups[k] for k in torch.randperm(len(groups), generator=generator).tolist()]
    return [_collate(g, sequences, first_inputs) for g in groups]


def _collate(group: list[int], seqs: list[Tensor], first_inputs: list[Tensor] | None) -> Batch:
    lengths = torch.tensor([len(seqs[i]) for i in group], dtype=torch.int64)
    x = pad_sequence([seqs[i] for i in group], batch_first=True)
    first = None if first_inputs is None else torch.stack([first_inputs[i] for i in group])
    return Batch(x=x, lengths=lengths, first_input=first)
