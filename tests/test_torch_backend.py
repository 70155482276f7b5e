"""backend="torch": torch's own layers (cuDNN on a GPU, oneDNN on the CPU) for the cells whose
function is theirs compute the step loop's function, with lengths, initial states, layers and
directions, gradients included; elsewhere the backend is refused in one line. The cells are
found in the registry: those whose cell has a torch layer of the same function."""

import pytest
import torch

from rnnlab import Recurrent
from rnnlab.cells import cell_names, make_cell
from rnnlab.cells.base import CellOptions
from rnnlab.errors import ConfigError

TORCH_CELLS = [c for c in cell_names() if make_cell(c, 2, 2, CellOptions()).torch_weights()]


def test_the_cells_with_a_torch_layer_are_the_expected_ones():
    assert TORCH_CELLS == ["tanh", "gru", "lstm", "lstm-np"]


def _pair(cell, **options):
    torch.manual_seed(0)
    ref = Recurrent(cell, 3, 5, backend="step", **options).double()
    fast = Recurrent(cell, 3, 5, backend="torch", **options).double()
    fast.load_state_dict(ref.state_dict())
    for p in ref.parameters():  # biases away from zero, so that their places matter
        torch.nn.init.uniform_(p, -0.5, 0.5)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize("layout", ["plain", "lengths", "deep-bidirectional"])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_torch_backend_matches_the_step_loop(cell, layout):
    options = {"num_layers": 2, "bidirectional": True, "dropout": 0.0}
    ref, fast = _pair(cell, **(options if layout == "deep-bidirectional" else {}))
    x = torch.randn(9, 4, 3, dtype=torch.float64)
    lengths = None if layout == "plain" else torch.tensor([9, 2, 6, 1])
    n = len(ref.cells)
    state = tuple(torch.randn(n, 4, w * 5, dtype=torch.float64)
                  for w in ref.layer_cells[0].state_widths)  # fmt: skip
    results = []
    for layer in (ref, fast):
        xi = x.clone().requires_grad_(True)
        out, final = layer(xi, lengths, state)
        (out.square().sum() + sum(s.sum() for s in final)).backward()
        results.append((out, final, [p.grad for p in layer.parameters()], xi.grad))
    (o1, f1, g1, x1), (o2, f2, g2, x2) = results
    torch.testing.assert_close(o2, o1, rtol=1e-10, atol=1e-12)
    for a, b in zip(f2, f1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(g2, g1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(x2, x1, rtol=1e-9, atol=1e-11)


def test_a_zero_length_is_left_to_rnnlabs_kernels_under_auto():
    """torch cannot pack a sequence of length 0 (a streaming chunk past its end)."""
    ref, _ = _pair("lstm")
    auto = Recurrent("lstm", 3, 5).double()
    auto.load_state_dict(ref.state_dict())
    x, lengths = torch.randn(4, 2, 3, dtype=torch.float64), torch.tensor([4, 0])
    torch.testing.assert_close(auto(x, lengths)[0], ref(x, lengths)[0])
    forced = Recurrent("lstm", 3, 5, backend="torch").double()
    with pytest.raises(ConfigError, match="zero lengths"):
        forced(x, lengths)


def test_auto_runs_onednn_only_over_equal_lengths_on_the_cpu(monkeypatch):
    """A packed sequence (unequal lengths) made oneDNN's LSTM slower than the kernel
    (bench/packed_lstm.py), so auto leaves it to the kernel; equal lengths go to oneDNN."""
    from rnnlab.kernels import torchrnn

    calls = []
    real = torchrnn.torch_layer
    monkeypatch.setattr(torchrnn, "torch_layer", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer = Recurrent("lstm", 3, 5, bidirectional=True)
    x = torch.randn(6, 3, 3)
    layer(x, torch.tensor([6, 6, 6]))
    assert len(calls) == 2  # one per direction
    out, _ = layer(x, torch.tensor([6, 4, 2]))
    assert len(calls) == 2
    forced = Recurrent("lstm", 3, 5, bidirectional=True, backend="torch")
    forced.load_state_dict(layer.state_dict())
    torch.testing.assert_close(out, forced(x, torch.tensor([6, 4, 2]))[0])


REFUSED = [
    ("lstm-v", {}),
    ("gru-v1", {}),
    ("lstm", {"layer_norm": True}),
    ("gru", {"zoneout": 0.2}),
]


@pytest.mark.parametrize("cell,options", REFUSED)
def test_the_torch_backend_is_refused_where_the_function_differs(cell, options):
    layer = Recurrent(cell, 3, 4, backend="torch", **options)
    with pytest.raises(ConfigError, match="the torch backend does not apply"):
        layer(torch.randn(3, 2, 3))
