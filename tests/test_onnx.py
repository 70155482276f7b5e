"""ONNX export of a Recurrent is right or refused: every cell's exported graph, run in ONNX
Runtime on a longer, wider batch with other lengths and an initial state, matches the eager
module within 1e-5; the cells ONNX has an operator for become that operator (with the GRU's
linear_before_reset as the cell computes it), the others a Scan; the exports that cannot be right
are refused with one line."""

import warnings

import numpy as np
import pytest
import torch

from rnnlab import Recurrent
from rnnlab.cells import cell_names
from rnnlab.errors import ConfigError

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnxscript", reason="onnxscript (torch.onnx's exporter) is not installed")

# What each cell becomes without options (with layer norm or zoneout every cell is a Scan).
ONNX_OPERATOR = {"lstm": "LSTM", "lstm-np": "LSTM", "lstm-v": "LSTM", "gru": "GRU",
                 "gru-v1": "GRU", "tanh": "RNN"}  # fmt: skip
OPTIONS = [{}, {"num_layers": 2, "bidirectional": True}, {"layer_norm": True}, {"zoneout": 0.3}]


def _export(layer, path):
    n, widths = len(layer.cells), layer.layer_cells[0].state_widths
    H = layer.hidden_size

    def inputs(B, T, seed):
        g = torch.Generator().manual_seed(seed)
        state = tuple(torch.randn(n, B, w * H, generator=g) for w in widths)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        return torch.randn(T, B, layer.input_size, generator=g), lengths, state

    T, B = torch.export.Dim("T", min=2, max=4096), torch.export.Dim("B", min=2, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dims = ({0: T, 1: B}, {0: B}, tuple({1: B} for _ in widths))
        torch.onnx.export(layer, inputs(3, 5, 0), str(path), dynamo=True, dynamic_shapes=dims)
    return inputs


def _run(path, x, lengths, state):
    session = ort.InferenceSession(str(path))
    names = [i.name for i in session.get_inputs()]
    values = [x.numpy(), lengths.numpy(), *(s.numpy() for s in state)]
    return session.run(None, dict(zip(names, values, strict=True)))


def _operators(path):
    graph = onnx.load(str(path)).graph
    found = set()

    def walk(g):
        for node in g.node:
            found.add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(graph)
    for f in onnx.load(str(path)).functions:
        for node in f.node:
            found.add(node.op_type)
    return found


def _cases():
    """Every cell, the k-th with the k-th option set (cycling), and without options each cell that
    ONNX has an operator for: every cell and every option, at a cost CI can pay."""
    cases = []
    for k, cell in enumerate(cell_names()):
        # the k-th set, or the next one this cell takes (a cell that takes none gets {})
        shifted = [OPTIONS[(k + j) % len(OPTIONS)] for j in range(len(OPTIONS))]
        cases.append((cell, next((o for o in shifted if _takes(cell, o)), {})))
    return cases + [(cell, {}) for cell in ONNX_OPERATOR if (cell, {}) not in cases]


def _takes(cell, options):
    try:
        Recurrent(cell, 3, 4, **options)
    except ConfigError:
        return False
    return True


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # the exporter's strict mode traces with Dynamo: no state between tests


@pytest.mark.parametrize(
    "cell,options", _cases(), ids=lambda c: c if isinstance(c, str) else "-".join(c) or "plain"
)
def test_exported_graph_matches_eager_on_new_lengths(cell, options, tmp_path):
    try:
        layer = Recurrent(cell, 3, 4, **options)
    except ConfigError:
        pytest.skip(f"{cell} does not take {options}")
    torch.manual_seed(1)
    for p in layer.parameters():  # nonzero biases and peepholes, so that their places matter
        torch.nn.init.uniform_(p, -0.5, 0.5)
    layer.eval()
    path = tmp_path / "layer.onnx"
    refusal = layer.layer_cells[0].onnx_refusal
    if refusal is not None:  # refused, in one line saying why
        with pytest.raises(Exception, match="cannot be exported to ONNX: " + refusal.split()[0]):
            _export(layer, path)
        return
    inputs = _export(layer, path)
    x, lengths, state = inputs(9, 13, 1)
    got = _run(path, x, lengths, state)
    with torch.no_grad():
        out, final = layer(x, lengths, state)
    np.testing.assert_allclose(got[0], out.numpy(), rtol=1e-5, atol=1e-5)
    for g, w in zip(got[1:], final, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-5)
    operators = _operators(path)
    plain = not options.get("layer_norm") and not options.get("zoneout")
    expected = ONNX_OPERATOR.get(cell) if plain else None
    if expected is not None:
        assert expected in operators and "Scan" not in operators, operators
    else:
        assert "Scan" in operators and not {"LSTM", "GRU", "RNN"} & operators, operators


@pytest.mark.parametrize("cell,reset", [("gru", 1), ("gru-v1", 0)])
def test_the_grus_linear_before_reset_is_the_cells_own(cell, reset, tmp_path):
    path = tmp_path / "gru.onnx"
    _export(Recurrent(cell, 3, 4).eval(), path)
    (node,) = [n for n in onnx.load(str(path)).graph.node if n.op_type == "GRU"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["linear_before_reset"] == reset


def test_training_mode_with_random_masks_is_refused(tmp_path):
    layer = Recurrent("lstm", 3, 4, zoneout=0.2)  # training mode
    with pytest.raises(Exception, match=r"call \.eval\(\) before export"):
        _export(layer, tmp_path / "x.onnx")


def test_the_torchscript_exporter_is_refused(tmp_path):
    layer = Recurrent("gru", 3, 4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception, match="unrolls a Recurrent's time loop"):
            torch.onnx.export(layer, (torch.randn(5, 2, 3),), str(tmp_path / "x.onnx"),
                              dynamo=False)  # fmt: skip
    assert not (tmp_path / "x.onnx").exists()
