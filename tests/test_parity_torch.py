"""Parity with torch.nn through from_torch / to_torch: outputs, states and gradients."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab import Recurrent
from rnnlab.errors import ConfigError

TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "tanh": nn.RNN}


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("kind", list(TORCH))
@pytest.mark.parametrize(
    "num_layers,bidirectional,batch_first", [(1, False, False), (2, True, True), (3, True, False)]
)
def test_from_torch_matches(kind, num_layers, bidirectional, batch_first):
    torch.manual_seed(0)
    ref = TORCH[kind](
        5, 7, num_layers, bidirectional=bidirectional, batch_first=batch_first
    ).double()
    ours = Recurrent.from_torch(ref)
    assert ours.config.cell == kind and ours.config.batch_first == batch_first
    shape = (3, 6, 5) if batch_first else (6, 3, 5)
    x1 = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    out_ref, state_ref = ref(x1)
    out, state = ours(x2)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(state, _as_tuple(state_ref), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # Gradients: inputs, weights, and biases (ours = b_ih + b_hh for LSTM and RNN).
    w = torch.randn_like(out)
    ((out_ref * w).sum() + sum(s.sum() for s in _as_tuple(state_ref))).backward()
    ((out * w).sum() + sum(s.sum() for s in state)).backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-12)
    for k, cell in enumerate(ours.cells):
        layer, direction = divmod(k, ours.num_directions)
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        torch.testing.assert_close(cell.weight_ih.grad, getattr(ref, "weight_ih" + sfx).grad)
        torch.testing.assert_close(cell.weight_hh.grad, getattr(ref, "weight_hh" + sfx).grad)
        torch.testing.assert_close(cell.bias.grad, getattr(ref, "bias_ih" + sfx).grad)
        if kind == "gru":
            torch.testing.assert_close(cell.bias_hh.grad, getattr(ref, "bias_hh" + sfx).grad)


@pytest.mark.parametrize("kind", list(TORCH))
def test_lengths_match_packed_sequences(kind):
    """torch's packed sequences and our lengths agree, in both directions and every layer."""
    ref = TORCH[kind](4, 5, 2, bidirectional=True).double()
    ours = Recurrent.from_torch(ref)
    lengths = torch.tensor([7, 4, 2])
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    packed_out, state_ref = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))
    out_ref, _ = pad_packed_sequence(packed_out, total_length=7)
    out, state = ours(x, lengths=lengths)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(state, _as_tuple(state_ref), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "lstm-np", "gru", "tanh"])
def test_to_torch_round_trip(cell):
    ours = Recurrent(cell, 4, 5, 2, bidirectional=True, batch_first=True).double()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_()
    ref = ours.to_torch()
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    out, state = ours(x)
    out_ref, state_ref = ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(state, _as_tuple(state_ref), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    back = Recurrent.from_torch(ref)
    torch.testing.assert_close(back(x)[0], out, rtol=1e-12, atol=1e-12)


def test_float32_parity():
    ref = nn.LSTM(88, 64, 2)
    ours = Recurrent.from_torch(ref)
    x = torch.randn(20, 4, 88)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=1e-5, atol=1e-5)


def test_conversions_refuse_what_they_cannot_express():
    with pytest.raises(ConfigError, match="proj_size"):
        Recurrent.from_torch(nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ConfigError, match="only tanh"):
        Recurrent.from_torch(nn.RNN(3, 4, nonlinearity="relu"))
    with pytest.raises(ConfigError, match="nn.LSTM, nn.GRU or nn.RNN"):
        Recurrent.from_torch(nn.Linear(3, 4))
    with pytest.raises(ConfigError, match="no torch.nn equivalent"):
        Recurrent("lstm-v", 3, 4).to_torch()
    with pytest.raises(ConfigError, match="layer_norm"):
        Recurrent("lstm", 3, 4, layer_norm=True).to_torch()


def test_from_torch_without_bias():
    ref = nn.GRU(3, 4, bias=False).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(Recurrent.from_torch(ref)(x)[0], ref(x)[0])
