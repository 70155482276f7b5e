import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    # Triton decides when a kernel is defined (decorated) whether it runs in its interpreter;
    # a test module imported early (cell_traits' probes run every cell) may import a GPU kernel
    # module before tests/test_gpu_*.py set this, so it is set here, before any test module.
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton

        triton.knobs.runtime.interpret = True
    except ImportError:  # Triton is a dev dependency; the GPU tests skip without it
        pass

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
