"""The fused kernels of the state-regularised cells (csrc/state_regularised.cpp) against the step
loop: outputs, final states and every gradient, with the options these cells take."""

import pytest
import torch
from torch.autograd import gradcheck

from rnnlab import Recurrent
from rnnlab.kernels import cpu, ops_sr

needs_extension = pytest.mark.skipif(
    cpu.extension() is None, reason=f"fused CPU extension unavailable: {cpu.unavailable_reason()}"
)

CASES = [
    ("sr-gru", {}),
    ("sr-gru", {"temperature": 0.1, "centroids": 3}),
    ("sr-lstm", {}),
    ("sr-lstm", {"peepholes": False}),
    ("sr-lstm", {"temperature": 0.1, "centroids": 3}),
]


def _pair(cell, cell_args, layers, bidirectional, dtype, **options):
    kwargs = dict(bidirectional=bidirectional, cell_args=cell_args, **options)
    ref = Recurrent(cell, 5, 6, layers, backend="step", **kwargs).to(dtype)
    fast = Recurrent(cell, 5, 6, layers, backend="fused", **kwargs).to(dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _run(layer, x, lengths, state, weights, seed):
    torch.manual_seed(seed)  # the same recurrent-dropout masks on both paths
    x = x.detach().clone().requires_grad_()
    state = tuple(s.detach().clone().requires_grad_() for s in state)
    out, final = layer(x, lengths=lengths, state=state)
    loss = (out * weights).sum() + sum((s * s.cos()).sum() for s in final)
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    return [out, *final, *grads]


@needs_extension
@pytest.mark.parametrize("cell,cell_args", CASES)
@pytest.mark.parametrize("layers,bidirectional,dropout", [(1, False, 0.0), (2, True, 0.3)])
def test_fused_matches_step_float64(cell, cell_args, layers, bidirectional, dropout):
    """Unequal lengths (one empty row), a given initial state, recurrent dropout in training."""
    gen = torch.Generator().manual_seed(len(cell) + layers)
    ref, fast = _pair(cell, cell_args, layers, bidirectional, torch.float64,
                      recurrent_dropout=dropout)  # fmt: skip
    T, B, D = 9, 4, 2 if bidirectional else 1
    x = torch.randn(T, B, 5, dtype=torch.float64, generator=gen)
    lengths = torch.tensor([9, 4, 0, 6])
    widths = ref.layer_cells[0].state_widths
    state = tuple(torch.randn(layers * D, B, w * 6, dtype=torch.float64, generator=gen)
                  for w in widths)  # fmt: skip
    weights = torch.randn(T, B, D * 6, dtype=torch.float64, generator=gen)
    want = _run(ref, x, lengths, state, weights, 3)
    got = _run(fast, x, lengths, state, weights, 3)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@needs_extension
@pytest.mark.parametrize("cell,cell_args", CASES)
def test_fused_matches_step_float32(cell, cell_args):
    """float32 at widths that fill the packed product's 32-column panels partly, with a batch
    that leaves a partial 8-row tile."""
    gen = torch.Generator().manual_seed(5)
    kwargs = dict(cell_args=cell_args, recurrent_dropout=0.2, bidirectional=True)
    ref = Recurrent(cell, 7, 37, backend="step", **kwargs)
    fast = Recurrent(cell, 7, 37, backend="fused", **kwargs)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(12, 13, 7, generator=gen)
    lengths = torch.randint(1, 13, (13,), generator=gen)
    weights = torch.randn(12, 13, 74, generator=gen)
    state = tuple(torch.zeros(2, 13, w * 37) for w in ref.layer_cells[0].state_widths)
    for g, w in zip(_run(fast, x, lengths, state, weights, 1),
                    _run(ref, x, lengths, state, weights, 1), strict=True):  # fmt: skip
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * max(1.0, w.abs().max().item()))
    with torch.no_grad():  # inference: nothing saved
        outputs = []
        for layer in (fast, ref):
            torch.manual_seed(2)
            outputs.append(layer(x, lengths)[0])
        torch.testing.assert_close(*outputs, rtol=1e-5, atol=1e-5)


@needs_extension
def test_step_backend_step_norms_and_quantisation_keep_the_step_loop():
    calls = []
    real = ops_sr.srgru_sequence

    def spy(*args):
        calls.append(1)
        return real(*args)

    ops_sr.srgru_sequence = spy
    try:
        x = torch.randn(4, 2, 3)
        Recurrent("sr-gru", 3, 5, backend="step")(x)
        Recurrent("sr-gru", 3, 5, norm="batch")(x)
        Recurrent("sr-gru", 3, 5, quant_bits=8)(x)
        assert not calls
        Recurrent("sr-gru", 3, 5)(x)
        assert calls
    finally:
        ops_sr.srgru_sequence = real


def _op_inputs(lstm, peepholes, mask, T=4, B=3, H=4, k=3):
    gen = torch.Generator().manual_seed(int(lstm) * 4 + int(peepholes) * 2 + int(mask))
    G = 4 if lstm else 3

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, dtype=torch.float64, generator=gen)).requires_grad_()

    valid = torch.tensor([[1, 1, 1]] * 2 + [[1, 0, 1], [1, 0, 0]], dtype=torch.bool)
    rmask = (torch.rand(B, H, generator=gen) > 0.3).double() / 0.7 if mask else None
    x, W, S, h0 = r(T, B, G * H), r(G * H, H, scale=0.5), r(k, H), r(B, H)
    if lstm:
        P = r(3, H) if peepholes else None
        return (x, W, P, S, 0.7, (h0, r(B, H)), valid, rmask)
    return (x, W, S, 0.7, h0, valid, rmask)


@needs_extension
@pytest.mark.parametrize("lstm,peepholes", [(False, False), (True, True), (True, False)])
@pytest.mark.parametrize("mask", [False, True])
def test_gradcheck_of_the_operators(lstm, peepholes, mask):
    """Exact gradients (the hard sigmoid's kinks are met with probability zero)."""
    args = _op_inputs(lstm, peepholes, mask)
    if lstm:
        x, W, P, S, tau, (h0, c0), valid, rmask = args
        inputs = (x, W, S, h0, c0) + ((P,) if peepholes else ())

        def f(x, W, S, h0, c0, *P):
            Y, (h, c) = ops_sr.srlstm_sequence(x, W, P[0] if P else None, S, tau, (h0, c0),
                                               valid, rmask)  # fmt: skip
            return Y, h, c
    else:
        x, W, S, tau, h0, valid, rmask = args
        inputs = (x, W, S, h0)

        def f(x, W, S, h0):
            return ops_sr.srgru_sequence(x, W, S, tau, h0, valid, rmask)

    assert gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


@needs_extension
@pytest.mark.parametrize("lstm", [False, True])
def test_opcheck_of_the_operators(lstm):
    args = _op_inputs(lstm, True, True)
    e = torch.empty(0, dtype=torch.float64)
    if lstm:
        x, W, P, S, tau, (h0, c0), valid, rmask = args
        op = torch.ops.rnnlab.srlstm_forward.default
        inputs = (x, W, P, S, h0, c0, valid, rmask, tau, True)
        bare = (x.detach(), W.detach(), e, S.detach(), h0.detach(), c0.detach(), e, e, tau, False)
    else:
        x, W, S, tau, h0, valid, rmask = args
        op = torch.ops.rnnlab.srgru_forward.default
        inputs = (x, W, S, h0, valid, rmask, tau, True)
        bare = (x.detach(), W.detach(), S.detach(), h0.detach(), e, e, tau, False)
    torch.library.opcheck(op, inputs)
    torch.library.opcheck(op, bare)


@needs_extension
@pytest.mark.parametrize("cell", ["sr-gru", "sr-lstm"])
def test_nan_propagates_and_saturation_stays_finite(cell):
    """Built with -ffast-math, the kernels must carry a NaN through (training stops on it) and
    saturate, never turn into NaN, where huge inputs drive the gates and the softmax's logits."""
    layer = Recurrent(cell, 3, 4, backend="fused", cell_args={"temperature": 1e-3})
    x = torch.randn(5, 2, 3, requires_grad=True)
    with torch.no_grad():
        x[2, 0, 1] = float("nan")
    out, _ = layer(x)
    assert torch.isnan(out[2:, 0]).all() and not torch.isnan(out[:, 1]).any()
    out.nan_to_num().sum().backward()
    ref = Recurrent(cell, 3, 4, backend="step", cell_args={"temperature": 1e-3})
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(30, 2, 3) * 1e4
    layer.zero_grad()
    want, got = ref(x)[0], layer(x)[0]
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    got.sum().backward()
    want.sum().backward()
    for p, q in zip(layer.parameters(), ref.parameters(), strict=True):
        assert torch.isfinite(p.grad).all()
        atol = 1e-3 * q.grad.abs().max().item() + 1e-9  # saturated: some gradients all but 0
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=atol)
