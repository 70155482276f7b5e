"""adLIF / RadLIF's GPU kernels (``rnnlab.kernels.gpu_spiking``), run on the CPU in Triton's
interpreter, against the step loop in float64: outputs, final states, the spike-rate statistic
and the surrogate gradients of the inputs, the given initial state and every parameter; through
``Recurrent`` (a bidirectional two-layer stack, unequal lengths with an empty row, recurrent
dropout), with the cell arguments, leading padding, and float32. What the registry test
(tests/test_gpu_kernels.py) does not reach."""

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
from rnnlab.cells.spiking import AdLIFCell, RadLIFCell  # noqa: E402
from rnnlab.kernels import gpu_spiking  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CELLS = {"adlif": AdLIFCell, "radlif": RadLIFCell}


def _on_the_kernels(monkeypatch, cell: str) -> list[bool]:
    """Route layers to the GPU kernels (on the CPU: the interpreter); record whether they ran."""
    ran: list[bool] = []
    cls = CELLS[cell]
    kernels = cls.gpu_sequence

    def recorded(self, *args, **kwargs):
        out = kernels(self, *args, **kwargs)
        ran.append(out is not None)
        return out

    monkeypatch.setattr(recurrent, "_on_gpu", lambda x: True)
    monkeypatch.setattr(cls, "gpu_sequence", recorded)
    return ran


def _pair(cell, dtype, gain=3.0, backend="fused", **options):
    """The step loop and the kernels with the same weights; ``gain`` scales the batch norm's
    output (the input currents), so that the neurons spike often enough to matter."""
    torch.manual_seed(0)
    ref = Recurrent(cell, 3, 5, backend="step", **options).to(dtype).to(DEVICE)
    with torch.no_grad():
        for c in ref.layer_cells:
            if c.norm is not None:
                c.norm.weight.fill_(gain)
                c.norm.bias.fill_(0.3)
            c.a.uniform_(-1.0, 1.0)  # both signs of the adaptation, and strong
    fast = Recurrent(cell, 3, 5, backend=backend, **options).to(dtype).to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _initial_state(layers, B, dtype):
    gen = torch.Generator().manual_seed(4)
    s = (torch.rand(layers, B, 5, generator=gen) < 0.4).to(dtype)
    u = torch.rand(layers, B, 5, generator=gen).to(dtype) * 1.4 - 0.2
    w = torch.randn(layers, B, 5, generator=gen).to(dtype) * 0.3
    return tuple(p.to(DEVICE) for p in (s, u, w))


def _run(layer, x, lengths, state):
    """Outputs, final state, every gradient (input, initial state, parameters) and the rate."""
    torch.manual_seed(1)  # the same recurrent-dropout masks on both paths
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    out, final = layer(x, lengths=lengths, state=state)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(out)
    loss = (out * weights).sum() + sum((k + 1) * (f * f).sum() for k, f in enumerate(final))
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    return [out, *final, *grads], layer.statistics()["spike_rate"]


def _compare(got, want, rtol=1e-10, atol=1e-12):
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=f"result {k}")


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_kernels_match_the_step_loop_with_state_statistics_and_gradients(
    cell, num_layers, bidirectional, monkeypatch
):
    """Training mode, unequal lengths (one empty row), a given initial state with its gradient,
    recurrent dropout (radlif); the spike rate equal to the step loop's."""
    options = {"recurrent_dropout": 0.3} if cell == "radlif" else {}
    ref, fast = _pair(cell, torch.float64, num_layers=num_layers, bidirectional=bidirectional,
                      **options)  # fmt: skip
    T, B = 6, 3
    x = torch.randn(T, B, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x, lengths = x.to(DEVICE), torch.tensor([T, 0, 4], device=DEVICE)
    state = _initial_state(len(ref.layer_cells), B, torch.float64)
    want, want_rate = _run(ref, x, lengths, state)
    ran = _on_the_kernels(monkeypatch, cell)
    got, got_rate = _run(fast, x, lengths, state)
    assert ran == [True] * len(ref.layer_cells), ran
    assert 0.05 < want_rate < 0.9, "too few or too many spikes for the comparison to mean much"
    assert float(got_rate) == float(want_rate)
    _compare(got, want)
    assert all(g.abs().sum() > 0 for g in got[4:]), "a gradient is identically zero"


@pytest.mark.parametrize("cell_args", [{"stable": True}, {"batch_norm": False}])
def test_cell_arguments(cell_args, monkeypatch):
    """``stable`` (a clamped at beta - 1, its gradient through the clamp) and no batch norm
    (larger inputs, so that the neurons spike)."""
    ref, fast = _pair("radlif", torch.float64, cell_args=cell_args)
    scale = 1.0 if cell_args.get("batch_norm", True) else 8.0
    x = torch.randn(5, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x, lengths = (x * scale).to(DEVICE), torch.tensor([5, 2, 4], device=DEVICE)
    state = _initial_state(1, 3, torch.float64)
    want, want_rate = _run(ref, x, lengths, state)
    ran = _on_the_kernels(monkeypatch, "radlif")
    got, got_rate = _run(fast, x, lengths, state)
    assert ran == [True] and want_rate > 0.05
    assert float(got_rate) == float(want_rate)
    _compare(got, want)


def test_a_step_normalisation_leaves_the_step_loop_running(monkeypatch):
    ref, fast = _pair("adlif", torch.float64, backend="auto", norm="batch")
    x = torch.randn(4, 3, 3, dtype=torch.float64, device=DEVICE)
    fast.train()
    ran = _on_the_kernels(monkeypatch, "adlif")
    torch.manual_seed(0)
    fast_out = fast(x)[0]
    assert ran == [False]
    torch.manual_seed(0)
    torch.testing.assert_close(fast_out, ref(x)[0])


@pytest.mark.parametrize("cell", list(CELLS))
def test_leading_padding_keeps_the_initial_state(cell):
    """valid need not be a prefix (the CPU kernel assumes one): steps before a row's first valid
    one keep (s_0, u_0, w_0); s_{t-1} of the first valid step is s_0, not H(u_0 - 1)."""
    torch.manual_seed(5)
    unit = Recurrent(cell, 3, 5).double().to(DEVICE).layer_cells[0]
    T, B = 5, 3
    x_proj = (torch.randn(T, B, 5, dtype=torch.float64) * 2.0 + 0.5).to(DEVICE)
    valid = torch.ones(T, B, dtype=torch.bool, device=DEVICE)
    valid[:2, 1] = False  # two leading padded steps
    valid[1:3, 2] = False  # a gap
    s0, u0, w0 = (p[0] for p in _initial_state(1, B, torch.float64))
    s0 = (u0 < 1.0).to(s0)  # s_0 != H(u_0 - 1) everywhere

    def steps(xp, state):
        outputs = []
        for t in range(T):
            new = unit.step(xp[t], state, None)
            v = valid[t][:, None]
            state = tuple(torch.where(v, n, o) for n, o in zip(new, state, strict=True))
            outputs.append(torch.where(v, new[0], 0.0))
        return torch.stack(outputs), state

    def kernels(xp, state):
        out, final, tallies = gpu_spiking.spiking_sequence(unit, xp, state, valid, None)
        assert tallies[0] is out
        return out, final

    results = []
    for fn in (steps, kernels):
        unit.zero_grad()
        xp = x_proj.clone().requires_grad_()
        state = tuple(p.clone().requires_grad_() for p in (s0, u0, w0))
        out, final = fn(xp, state)
        (out.square().sum() + sum((k + 1) * f.sum() for k, f in enumerate(final))).backward()
        results.append([out, *final, xp.grad, *(p.grad for p in state),
                        *(p.grad for p in unit.parameters())])  # fmt: skip
    _compare(results[1], results[0])


@pytest.mark.parametrize("cell", list(CELLS))
def test_float32_the_same_spikes_and_close_gradients(cell, monkeypatch):
    """float32, bidirectional: the same spikes, close gradients; inference saves nothing."""
    ref, fast = _pair(cell, torch.float32, bidirectional=True)
    x = torch.randn(6, 3, 3, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    lengths = torch.tensor([6, 3, 5], device=DEVICE)
    state = _initial_state(2, 3, torch.float32)
    want, want_rate = _run(ref, x, lengths, state)
    ran = _on_the_kernels(monkeypatch, cell)
    got, got_rate = _run(fast, x, lengths, state)
    assert ran == [True, True] and want_rate > 0.05
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    assert float(got_rate) == float(want_rate)
    _compare(got[1:], want[1:], rtol=1e-4, atol=1e-5)
    ref.eval()
    fast.eval()
    with torch.no_grad():
        want_out, want_final = ref(x, lengths=lengths, state=state)
        got_out, got_final = fast(x, lengths=lengths, state=state)
    torch.testing.assert_close(got_out, want_out, rtol=0, atol=0)
    _compare(got_final, want_final, rtol=1e-5, atol=1e-5)
