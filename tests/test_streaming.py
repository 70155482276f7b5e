"""Streaming inference: a sequence fed in chunks, down to one step at a time, each call given the
state the previous one returned, gives the outputs and final state of one call over the whole
sequence, for every cell and option in evaluation mode (padding included: a chunk past a
sequence's end has length 0 for it and keeps its state)."""

import pytest
import torch

from rnnlab import Recurrent
from rnnlab.cells import cell_names
from rnnlab.errors import ConfigError

OPTIONS = [
    {},
    {"layer_norm": True},
    {"zoneout": 0.3},
    {"num_layers": 2, "dropout": 0.5, "recurrent_dropout": 0.2},
    {"num_layers": 3, "dropout": 0.5},  # the scan cells have no recurrent dropout
    {"norm": "batch", "zoneout": 0.3},  # the clock carries the step's statistics on
    {"norm": "assorted-time", "num_layers": 2},  # the window carries the earlier values
    {"norm": "batch-layer", "quant_bits": 3},
]


def _chunked(layer, x, lengths, sizes):
    """Run x (T, B, I) in consecutive chunks of the given sizes, carrying the state."""
    state, outputs, start = None, [], 0
    for size in sizes:
        chunk_lengths = (lengths - start).clamp(0, size)
        out, state = layer(x[start : start + size], chunk_lengths, state)
        outputs.append(out)
        start += size
    return torch.cat(outputs), state


@pytest.mark.parametrize("backend", ["auto", "step"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("cell", cell_names())
def test_chunks_equal_one_call(cell, options, backend):
    try:
        layer = Recurrent(cell, 3, 5, backend=backend, **options)
    except ConfigError:
        pytest.skip(f"{cell} does not take {options}")
    if not layer.layer_cells[0].causal:  # say so, and check the causal form of the cell
        layer = Recurrent(cell, 3, 5, backend=backend, cell_args={"smoothing": False}, **options)
    layer = layer.double().eval()
    torch.manual_seed(0)
    x = torch.randn(11, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([11, 7, 1, 4])
    with torch.no_grad():
        want, want_state = layer(x, lengths)
        for sizes in ([1] * 11, [3, 1, 5, 2], [6, 5]):
            got, state = _chunked(layer, x, lengths, sizes)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
            for g, w in zip(state, want_state, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_a_smoothing_layer_says_it_is_not_causal():
    """The uBRU with its backward pass: each output depends on the steps after it."""
    layer = Recurrent("bru", 3, 4).double().eval()
    assert not layer.layer_cells[0].causal
    with torch.no_grad():  # transitions that depend on the previous state (at 1/2 they do not)
        layer.layer_cells[0].theta.copy_(torch.randn(3, 4))
    x = torch.randn(8, 1, 3, dtype=torch.float64)
    with torch.no_grad():
        whole, _ = layer(x)
        first, _ = layer(x[:4])
    assert not torch.allclose(whole[:4], first)


def test_the_readme_streaming_example_runs_and_matches_one_call():
    from pathlib import Path

    import rnnlab

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = next(b.split("```", 1)[0] for b in readme.split("```python")[1:]
                 if "x.split(1)" in b)  # fmt: skip
    x = torch.randn(6, 2, 88)
    scope = {"rnnlab": rnnlab, "torch": torch, "x": x}
    exec(block, scope)  # noqa: S102 (the README's own code)
    with torch.no_grad():
        whole, state = scope["layer"](x)
    torch.testing.assert_close(scope["out"], whole[-1:])
    for part, want in zip(scope["state"], state, strict=True):
        torch.testing.assert_close(part, want)
