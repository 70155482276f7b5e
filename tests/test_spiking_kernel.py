"""The fused adLIF / RadLIF kernel (csrc/spiking.cpp) against the step loop, its reference:
outputs, final states, the spike-rate statistic, and the surrogate gradients of every parameter,
the inputs and the initial state (these cells have no exact gradient for finite differences to
check); the operators under torch.library.opcheck."""

import pytest
import torch

from rnnlab import Recurrent
from rnnlab.cells.spiking import AdLIFCell
from rnnlab.kernels import cpu
from rnnlab.kernels import ops_spiking as _ops_spiking  # noqa: F401 (registers the operators)

pytestmark = pytest.mark.skipif(
    cpu.extension() is None, reason=f"fused CPU extension unavailable: {cpu.unavailable_reason()}"
)

CELLS = ["adlif", "radlif"]


def _pair(cell, I, H, dtype, gain, **options):
    """The step loop and the fused kernel with the same weights; ``gain`` scales the batch
    norm's output (the input currents), so that the neurons spike often enough to matter."""
    ref = Recurrent(cell, I, H, backend="step", **options).to(dtype)
    with torch.no_grad():
        for layer_cell in ref.cells:
            layer_cell.norm.weight.fill_(gain)
            layer_cell.norm.bias.fill_(0.3)
    fast = Recurrent(cell, I, H, backend="fused", **options).to(dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _run(layer, x, lengths, state, seed):
    """Outputs, final state, statistics and the gradients of a loss that reads all of them."""
    torch.manual_seed(seed)  # the same recurrent-dropout masks on both paths
    x = x.detach().clone().requires_grad_()
    state = tuple(s.detach().clone().requires_grad_() for s in state)
    out, final = layer(x, lengths=lengths, state=state)
    weights = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(9))
    loss = (out * weights).sum() + sum((s * s).sum() for s in final)
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    return [out, *final, *grads], layer.statistics()["spike_rate"]


def _initial_state(layers, B, H, dtype, gen):
    s = (torch.rand(layers, B, H, generator=gen) < 0.3).to(dtype)
    u = torch.rand(layers, B, H, dtype=dtype, generator=gen) * 1.4 - 0.2
    w = torch.randn(layers, B, H, dtype=dtype, generator=gen) * 0.1
    return s, u, w


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_fused_matches_the_step_loop_float64(cell, num_layers, bidirectional):
    """Unequal lengths (one empty row), a given initial state, recurrent dropout (radlif),
    training mode (the batch norm on batch statistics)."""
    gen = torch.Generator().manual_seed(num_layers)
    T, B, I, H = 37, 34, 5, 19  # dV's chunks of 16 steps: 16, 16 and 5
    options = {"recurrent_dropout": 0.3} if cell == "radlif" else {}
    ref, fast = _pair(cell, I, H, torch.float64, 2.0, num_layers=num_layers,
                      bidirectional=bidirectional, **options)  # fmt: skip
    x = torch.randn(T, B, I, dtype=torch.float64, generator=gen)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[:2] = torch.tensor([T, 0])
    state = _initial_state(len(ref.cells), B, H, torch.float64, gen)
    want, want_rate = _run(ref, x, lengths, state, 3)
    got, got_rate = _run(fast, x, lengths, state, 3)
    assert 0.02 < want_rate < 0.9, "too few or too many spikes for the comparison to mean much"
    assert got_rate == pytest.approx(want_rate, rel=1e-12)
    names = ["out", "s_T", "u_T", "w_T", "x", "s0", "u0", "w0"]
    names += [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, want, got, strict=True):
        scale = max(1.0, a.abs().max().item())
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12 * scale, msg=name)
    assert all(g.abs().sum() > 0 for g in got[4:]), "a gradient is identically zero"


@pytest.mark.parametrize("cell", CELLS)
def test_fused_matches_the_step_loop_float32_with_and_without_gradients(cell):
    """float32 (the packed product's type in the backward) at a width that fills its 32-column
    panels partly and a batch that leaves a partial 8-row tile; inference saves nothing."""
    gen = torch.Generator().manual_seed(5)
    T, B, I, H = 17, 13, 7, 37
    ref, fast = _pair(cell, I, H, torch.float32, 2.0, bidirectional=True)
    x = torch.randn(T, B, I, generator=gen)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    state = _initial_state(2, B, H, torch.float32, gen)
    want, want_rate = _run(ref, x, lengths, state, 0)
    got, _ = _run(fast, x, lengths, state, 0)
    assert 0.02 < want_rate < 0.9
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)  # the same spikes
    for a, b in zip(want[1:], got[1:], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * max(1.0, a.abs().max().item()))
    ref.eval()
    fast.eval()
    with torch.no_grad():
        want_out, want_final = ref(x, lengths=lengths, state=state)
        got_out, got_final = fast(x, lengths=lengths, state=state)
    torch.testing.assert_close(got_out, want_out, rtol=0, atol=0)
    for a, b in zip(want_final, got_final, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_the_step_backend_runs_the_step_loop(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("backend='step' reached the fused kernel")

    monkeypatch.setattr(AdLIFCell, "fused_sequence", refuse)
    for cell in CELLS:
        layer = Recurrent(cell, 3, 4, backend="step")
        out, _ = layer(torch.randn(5, 2, 3))
        assert out.shape == (5, 2, 4)
    with pytest.raises(AssertionError, match="fused kernel"):
        Recurrent("radlif", 3, 4)(torch.randn(5, 2, 3))


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_the_operators_pass_opcheck(recurrent, masked):
    """Both operators, with and without V, padding and the recurrent-dropout mask."""
    gen = torch.Generator().manual_seed(0)
    T, B, H = 6, 3, 5
    f64 = torch.float64

    def rand(*shape):
        return torch.rand(*shape, dtype=f64, generator=gen)

    x = 3 * rand(T, B, H)
    alpha, beta, a, b = 0.8 + 0.1 * rand(H), 0.97 + 0.02 * rand(H), rand(H) - 0.5, rand(H)
    V = rand(H, H) - 0.5 if recurrent else x.new_empty(0)
    s0, u0, w0 = (rand(B, H) < 0.5).to(f64), rand(B, H), rand(B, H)
    valid = torch.arange(T)[:, None] < torch.tensor([6, 2, 0])[None, :]
    rmask = (rand(B, H) < 0.7).to(f64) / 0.7 if masked else x.new_empty(0)
    inputs = [x, alpha, beta, a, b, V, s0, u0, w0]
    forward_args = (*(t.requires_grad_(t.numel() > 0) for t in inputs), valid, rmask, True)
    torch.library.opcheck(torch.ops.rnnlab.spiking_forward.default, forward_args)
    with torch.no_grad():
        Y, sT, uT, wT, acts = torch.ops.rnnlab.spiking_forward(*forward_args)
    assert 0 < Y.mean() < 1
    dY, dsT, duT, dwT = rand(T, B, H), rand(B, H), rand(B, H), rand(B, H)
    backward_args = (dY, dsT, duT, dwT, acts, Y, s0.detach(), u0.detach(), w0.detach(),
                     alpha.detach(), beta.detach(), a.detach(), b.detach(), V.detach(), valid,
                     rmask)  # fmt: skip
    torch.library.opcheck(torch.ops.rnnlab.spiking_backward.default, backward_args)


@pytest.mark.parametrize("cell", CELLS)
def test_a_valid_mask_with_a_gap_is_left_to_the_step_loop(cell):
    """The kernel's backward takes each row's valid steps as a prefix: a gap (a padded step
    before a valid one, which ``Recurrent`` never makes) gets None, so the step loop runs."""
    layer = Recurrent(cell, 3, 4, backend="fused")
    unit = layer.layer_cells[0]
    x_proj = unit.project_input(torch.randn(5, 2, 3))
    state = unit.initial_state(2, x_proj)
    prefix = torch.tensor([[1, 1], [1, 1], [1, 0], [0, 0], [0, 0]], dtype=torch.bool)
    gap = prefix.clone()
    gap[1, 1], gap[2, 1] = False, True  # row 1: valid, padded, valid
    assert unit.fused_sequence(x_proj, state, prefix, None) is not None
    assert unit.fused_sequence(x_proj, state, gap, None) is None
