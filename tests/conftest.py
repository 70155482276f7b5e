import numpy as np
import pytest
import torch

from rnnlab.data.polyphonic import PianoRolls, save_npz


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_npz(tmp_path):
    """A small polyphonic dataset in rnnlab's .npz format: a few short random pieces."""
    rng = np.random.default_rng(0)

    def pieces(n):
        return [rng.random((int(rng.integers(4, 12)), 88)) < 0.05 for _ in range(n)]

    path = tmp_path / "tiny.npz"
    save_npz(
        PianoRolls("tiny", "test", {"train": pieces(6), "valid": pieces(3), "test": pieces(3)}),
        path,
    )
    return path
