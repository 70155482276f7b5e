"""Padded batches of variable-length sequences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence


@dataclass
class Batch:
    """x (B, T, D) zero-padded, lengths (B,) int64."""

    x: Tensor
    lengths: Tensor

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())


def to_tensors(pieces: list[np.ndarray], dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Convert rolls once, so that batching an epoch costs no conversion."""
    return [torch.from_numpy(np.ascontiguousarray(p)).to(dtype) for p in pieces]


def make_batches(
    sequences: list[Tensor],
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
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
    return [_collate([sequences[i] for i in g]) for g in groups]


def _collate(seqs: list[Tensor]) -> Batch:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    return Batch(x=pad_sequence(seqs, batch_first=True), lengths=lengths)
