"""The uBRU's GPU kernels (``rnnlab.kernels.gpu_bru``: the filter and the smoothing pass, each a
persistent kernel with its backward), run on the CPU in Triton's interpreter, against the step
loop and ``smooth``'s PyTorch recursion in float64: outputs, final states and the gradients of
the input, the given initial state and theta; through ``Recurrent`` with and without smoothing,
unequal lengths (one empty row: the smoothing starts at each sequence's own end), a
bidirectional two-layer stack; a gap in ``valid``, NaN and saturated inputs, float32. What the
registry test (tests/test_gpu_kernels.py) does not reach."""

import os

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed")
if not torch.cuda.is_available():
    # Before the kernels are defined (decorated): Triton decides there whether they are
    # interpreted (see tests/test_gpu_kernels.py).
    os.environ["TRITON_INTERPRET"] = "1"
    triton.knobs.runtime.interpret = True

import rnnlab.recurrent as recurrent  # noqa: E402
from rnnlab import Recurrent  # noqa: E402
from rnnlab.cells.bru import BRUCell  # noqa: E402
from rnnlab.kernels import gpu_bru  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _on_the_kernels(monkeypatch) -> dict[str, list[bool]]:
    """Route layers to the GPU kernels (on the CPU: the interpreter); record, per call, whether
    the filter's kernel ran and each call of the smoothing kernel."""
    ran: dict[str, list[bool]] = {"filter": [], "smooth": []}
    kernels, smooth = BRUCell.gpu_sequence, gpu_bru.smooth_sequence

    def filtered(self, *args, **kwargs):
        out = kernels(self, *args, **kwargs)
        ran["filter"].append(out is not None)
        return out

    def smoothed(*args, **kwargs):
        ran["smooth"].append(True)
        return smooth(*args, **kwargs)

    monkeypatch.setattr(recurrent, "_on_gpu", lambda x: True)
    monkeypatch.setattr(BRUCell, "gpu_sequence", filtered)
    monkeypatch.setattr(gpu_bru, "smooth_sequence", smoothed)
    return ran


def _pair(dtype, smoothing=True, backend="fused", **options):
    """The step loop and the kernels with the same weights; theta drawn wide (transition
    probabilities far from 1/2) and W large enough that the clamp of W x at 10 acts."""
    options = {"cell_args": {"smoothing": smoothing}, **options}
    ref = Recurrent("bru", 3, 5, backend="step", **options).to(dtype).to(DEVICE)
    with torch.no_grad():
        for cell in ref.layer_cells:
            gen = torch.Generator().manual_seed(3)
            cell.theta.copy_(1.5 * torch.randn(3, 5, generator=gen))
            cell.weight_ih.mul_(4.0)
    fast = Recurrent("bru", 3, 5, backend=backend, **options).to(dtype).to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _run(layer, x, lengths, a0):
    x = x.clone().requires_grad_()
    a0 = a0.clone().requires_grad_()
    out, (a_T,) = layer(x, lengths=lengths, state=(a0,))
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(out)
    loss = (out * weights).sum() + (a_T * a_T).sum()
    return [out, a_T, *torch.autograd.grad(loss, [x, a0, *layer.parameters()])]


def _compare(got, want, rtol=1e-10, atol=1e-12):
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=f"result {k}")


@pytest.mark.parametrize("smoothing", [True, False])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_kernels_match_the_step_loop(smoothing, num_layers, bidirectional, monkeypatch):
    """Unequal lengths (one empty row), a given initial state with its gradient, theta's and
    W's gradients; the smoothing (when on) on its kernel, from each sequence's own end."""
    ref, fast = _pair(torch.float64, smoothing, num_layers=num_layers,
                      bidirectional=bidirectional)  # fmt: skip
    T, B = 6, 3
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(T, B, 3, dtype=torch.float64, generator=gen).to(DEVICE)
    lengths = torch.tensor([T, 0, 4], device=DEVICE)
    layers = len(ref.layer_cells)
    a0 = (torch.rand(layers, B, 5, dtype=torch.float64, generator=gen) * 0.9 + 0.05).to(DEVICE)
    want = _run(ref, x, lengths, a0)
    ran = _on_the_kernels(monkeypatch)
    got = _run(fast, x, lengths, a0)
    assert ran["filter"] == [True] * layers
    assert ran["smooth"] == ([True] * layers if smoothing else [])
    _compare(got, want)
    assert all(g.abs().sum() > 0 for g in got[2:]), "a gradient is identically zero"


@pytest.mark.parametrize("padded", [False, True])
def test_smoothing_kernel_matches_the_recursion_within_each_length(padded, monkeypatch):
    """``smooth(fused=True)`` routed to the GPU kernel against ``smooth(fused=False)``: gamma
    equals a at each sequence's last step, is 0 past it, and the gradients of the filtered
    posteriors and theta match."""
    cell = Recurrent("bru", 5, 4).double().to(DEVICE).layer_cells[0]
    with torch.no_grad():
        cell.theta.normal_(0, 1.5, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    filtered = (torch.rand(7, 3, 4, dtype=torch.float64, generator=gen) * 0.98 + 0.01).to(DEVICE)
    lengths = torch.tensor([7, 2, 5], device=DEVICE) if padded else None
    if lengths is not None:
        steps = torch.arange(7, device=DEVICE)[:, None, None]
        filtered = torch.where(steps < lengths[None, :, None], filtered, 0.0)
    d_gamma = torch.randn(7, 3, 4, dtype=torch.float64, generator=gen).to(DEVICE)
    ran = _on_the_kernels(monkeypatch)
    results = []
    for fused in (False, True):
        f = filtered.clone().requires_grad_()
        gamma = cell.smooth(f, lengths, fused=fused)
        grads = torch.autograd.grad((gamma * d_gamma).sum(), [f, cell.theta])
        results.append([gamma, *grads])
    assert ran["smooth"] == [True]
    _compare(results[1], results[0])
    gamma = results[1][0]
    for b, n in enumerate([7, 2, 5] if padded else [7, 7, 7]):
        torch.testing.assert_close(gamma[n - 1, b], filtered[n - 1, b], rtol=0, atol=0)
        assert bool((gamma[n:, b] == 0).all())


def test_filter_carries_the_state_over_a_gap(monkeypatch):
    """valid need not be a prefix: a padded step keeps the state, outputs 0, and passes the
    state's gradient through; against the cell's step under the same rule."""
    cell = _pair(torch.float64)[0].layer_cells[0]
    T, B = 6, 3
    gen = torch.Generator().manual_seed(4)
    x_proj = (torch.randn(T, B, 5, dtype=torch.float64, generator=gen) * 6.0).to(DEVICE)
    valid = torch.ones(T, B, dtype=torch.bool, device=DEVICE)
    valid[1:3, 1] = False
    valid[:2, 2] = False
    a0 = (torch.rand(B, 5, dtype=torch.float64, generator=gen) * 0.9 + 0.05).to(DEVICE)

    def steps(xp, a):
        outputs = []
        for t in range(T):
            new = cell.step(xp[t], (a,), None)[0]
            v = valid[t][:, None]
            a = torch.where(v, new, a)
            outputs.append(torch.where(v, new, 0.0))
        return torch.stack(outputs), a

    def kernels(xp, a):
        out, (a_T,) = gpu_bru.bru_sequence(cell, xp, (a,), valid)
        return out, a_T

    results = []
    for fn in (steps, kernels):
        xp, a = x_proj.clone().requires_grad_(), a0.clone().requires_grad_()
        out, a_T = fn(xp, a)
        loss = (out * out).sum() + 2.0 * a_T.sum()
        results.append([out, a_T, *torch.autograd.grad(loss, [xp, a, cell.theta])])
    _compare(results[1], results[0])


@pytest.mark.parametrize("smoothing", [True, False])
def test_nan_and_saturation_as_the_step_loop(smoothing, monkeypatch):
    """min(NaN, 10) is NaN (its gradient 0, as torch's clamp), and inputs far past the clamp on
    both sides saturate as on the step loop."""
    ref, fast = _pair(torch.float32, smoothing)
    ran = _on_the_kernels(monkeypatch)
    for x in (torch.randn(5, 2, 3), torch.randn(8, 2, 3) * 1e4):
        if x.shape[0] == 5:
            x[2, 0, 1] = float("nan")
        x = x.to(DEVICE)
        results = []
        for layer in (ref, fast):
            layer.zero_grad()
            xx = x.clone().requires_grad_()
            out, (a_T,) = layer(xx)
            (out.nan_to_num().sum() + a_T.nan_to_num().sum()).backward()
            results.append([out, a_T, xx.grad, *(p.grad for p in layer.parameters())])
        assert bool(torch.isnan(results[0][0]).any()) == (x.shape[0] == 5)
        for g, w in zip(results[1], results[0], strict=True):
            assert torch.equal(torch.isnan(g), torch.isnan(w))
            torch.testing.assert_close(g.nan_to_num(), w.nan_to_num(), rtol=1e-4, atol=1e-4)
    assert ran["filter"] == [True, True]


def test_float32_matches_the_step_loop(monkeypatch):
    ref, fast = _pair(torch.float32, bidirectional=True)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(6, 3, 3, generator=gen).to(DEVICE)
    lengths = torch.tensor([6, 3, 5], device=DEVICE)
    a0 = (torch.rand(2, 3, 5, generator=gen) * 0.9 + 0.05).to(DEVICE)
    want = _run(ref, x, lengths, a0)
    ran = _on_the_kernels(monkeypatch)
    got = _run(fast, x, lengths, a0)
    assert ran["filter"] == [True, True] and ran["smooth"] == [True, True]
    _compare(got, want, rtol=1e-4, atol=1e-5)


def test_a_step_normalisation_leaves_the_step_loop_and_its_smoothing(monkeypatch):
    ref, fast = _pair(torch.float64, backend="auto", norm="batch")
    x = torch.randn(4, 3, 3, dtype=torch.float64, device=DEVICE)
    ran = _on_the_kernels(monkeypatch)
    torch.manual_seed(0)
    got = fast(x)[0]
    assert ran == {"filter": [False], "smooth": []}
    torch.manual_seed(0)
    torch.testing.assert_close(got, ref(x)[0])
