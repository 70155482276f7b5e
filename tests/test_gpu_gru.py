"""Both GRUs' GPU kernels (``rnnlab.kernels.gpu_gru``), run on the CPU in Triton's interpreter
(TRITON_INTERPRET=1) through ``Recurrent`` against the step loop, in float64 with every gradient:
a given initial state and its gradient, zoneout in training and in evaluation, layer norm with
zoneout and recurrent dropout together, a two-layer bidirectional stack, more than one program
per batch row, float32 against the float64 step loop, and layer norm's width bound.
(No GPU has been lent to this project; on one, the same kernels run compiled.)"""

import os

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed")
if not torch.cuda.is_available():
    # Before the kernels are defined (decorated): Triton decides there whether they are
    # interpreted, and torch may have imported Triton (and read TRITON_INTERPRET) already.
    os.environ["TRITON_INTERPRET"] = "1"
    triton.knobs.runtime.interpret = True

import rnnlab.recurrent as recurrent  # noqa: E402
from rnnlab import Recurrent  # noqa: E402
from rnnlab.cells import probe_cell  # noqa: E402
from rnnlab.kernels import gpu_gru  # noqa: E402

CELLS = ["gru", "gru-v1"]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # compiled on a GPU
T, B, I, H = 5, 3, 3, 5
EXACT = {"rtol": 1e-10, "atol": 1e-12}


def _on_the_kernels(monkeypatch, cell: str) -> list[bool]:
    """Send each layer's forward to the cell's GPU kernels (on the CPU: in the interpreter) and
    record, per call, whether they ran rather than the fallback."""
    ran: list[bool] = []
    cls = type(probe_cell(cell))
    kernels = cls.gpu_sequence

    def recorded(self, *args, **kwargs):
        out = kernels(self, *args, **kwargs)
        ran.append(out is not None)
        return out

    monkeypatch.setattr(recurrent, "_on_gpu", lambda x: True)
    monkeypatch.setattr(cls, "gpu_sequence", recorded)
    return ran


def _run(layer, x, lengths, state):
    """Outputs, final state, and the gradients of x, the initial state and every parameter."""
    torch.manual_seed(1)  # the same dropout and zoneout masks on both paths
    layer.zero_grad()
    xi = x.clone().requires_grad_(True)
    s = None if state is None else tuple(p.clone().requires_grad_(True) for p in state)
    out, final = layer(xi, lengths=lengths, state=s)
    (out.square().sum() + sum((k + 1) * f.sum() for k, f in enumerate(final))).backward()
    state_grads = [] if s is None else [p.grad for p in s]
    return [out, *final, xi.grad, *state_grads, *(p.grad for p in layer.parameters())]


def _check(monkeypatch, cell, *, training=True, lengths=(T, 2, 0), with_state=False,
           dtype=torch.float64, tol=EXACT, hidden=H, init=0.6, **options):  # fmt: skip
    """Recurrent on the kernels (``backend="fused"``, ``dtype``) against Recurrent on the step
    loop (float64), the same parameters, inputs and masks."""
    torch.manual_seed(0)
    ref = Recurrent(cell, I, hidden, backend="step", **options).double().to(DEVICE)
    if init:
        for p in ref.parameters():
            torch.nn.init.uniform_(p, -init, init)
    fast = Recurrent(cell, I, hidden, backend="fused", **options).to(dtype).to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    ref.train(training)
    fast.train(training)
    x = torch.randn(T, B, I, dtype=torch.float64, device=DEVICE)
    n = ref.config.num_layers * ref.num_directions
    state = (torch.randn(n, B, hidden, dtype=torch.float64, device=DEVICE),) if with_state else None
    steps = None if lengths is None else torch.tensor(lengths, device=DEVICE)
    want = _run(ref, x, steps, state)
    ran = _on_the_kernels(monkeypatch, cell)
    cast = None if state is None else tuple(p.to(dtype) for p in state)
    got = _run(fast, x.to(dtype), steps, cast)
    assert ran == [True] * n, f"kernels ran: {ran}"
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, **tol)


@pytest.mark.parametrize("cell", CELLS)
def test_a_given_initial_state_and_its_gradient(cell, monkeypatch):
    _check(monkeypatch, cell, with_state=True, recurrent_dropout=0.3)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_zoneout(cell, training, monkeypatch):
    """Drawn keep masks in training, their expectation p in evaluation."""
    _check(monkeypatch, cell, training=training, with_state=True, bidirectional=True,
           zoneout=0.3)  # fmt: skip


@pytest.mark.parametrize("cell", CELLS)
def test_layer_norm_with_zoneout_and_recurrent_dropout(cell, monkeypatch):
    """The gains' (and gru's b') gradients through the normalisations, with both masks."""
    _check(monkeypatch, cell, with_state=True, layer_norm=True, zoneout=0.2,
           recurrent_dropout=0.3)  # fmt: skip


@pytest.mark.parametrize("cell", CELLS)
def test_a_two_layer_bidirectional_stack(cell, monkeypatch):
    _check(monkeypatch, cell, lengths=(T, 3, 1), with_state=True, num_layers=2,
           bidirectional=True, dropout=0.2, layer_norm=True, zoneout=0.2,
           recurrent_dropout=0.3)  # fmt: skip


@pytest.mark.parametrize("cell", CELLS)
def test_several_programs_per_batch_row(cell, monkeypatch):
    """Without layer norm a row's units are split over programs of 256 (H = 260: two, the
    second mostly masked)."""
    _check(monkeypatch, cell, lengths=(T, 2, 4), hidden=260, init=0.0, zoneout=0.2,
           recurrent_dropout=0.3)  # fmt: skip


@pytest.mark.parametrize("cell", CELLS)
def test_float32_kernels_against_the_float64_step_loop(cell, monkeypatch):
    """In evaluation (zoneout's masks are then p, the same in both precisions)."""
    _check(monkeypatch, cell, training=False, with_state=True, dtype=torch.float32,
           tol={"rtol": 1e-4, "atol": 1e-5}, bidirectional=True, layer_norm=True,
           zoneout=0.2)  # fmt: skip


@pytest.mark.parametrize("cell", CELLS)
def test_layer_norm_above_the_width_bound_leaves_the_kernels(cell, monkeypatch):
    """One program holds a normalised row: wider layers get None (the step loop runs)."""
    monkeypatch.setattr(gpu_gru, "LN_MAX_HIDDEN", H - 1)
    x_proj = torch.randn(T, B, 3 * H, dtype=torch.float64)
    h0 = torch.zeros(B, H, dtype=torch.float64)
    for layer_norm in (True, False):
        unit = Recurrent(cell, I, H, layer_norm=layer_norm).double().layer_cells[0]
        out = unit.gpu_sequence(x_proj, (h0,), None, None)
        assert (out is None) == layer_norm


@pytest.mark.parametrize("cell", CELLS)
def test_a_non_contiguous_initial_state(cell):
    """h0 (B, H) as a transposed view: the kernels read it as the contiguous copy, both ways."""
    torch.manual_seed(0)
    unit = Recurrent(cell, I, H, zoneout=0.2).double().to(DEVICE).layer_cells[0]
    x_proj = torch.randn(T, B, 3 * H, dtype=torch.float64, device=DEVICE)
    zone = torch.bernoulli(torch.full((T, B, H), 0.3, dtype=torch.float64, device=DEVICE))
    h0 = torch.randn(H, B, dtype=torch.float64, device=DEVICE)
    sequence = gpu_gru.gru_sequence if cell == "gru" else gpu_gru.gru_v1_sequence

    def run(start):
        s = start.detach().requires_grad_(True)
        out, (hT,) = sequence(unit, x_proj, s.t() if s.shape[0] == H else s, None, None, zone)
        (out.square().sum() + hT.sum()).backward()
        return out, hT, s.grad.t() if s.shape[0] == H else s.grad

    for a, b in zip(run(h0), run(h0.t().contiguous()), strict=True):
        torch.testing.assert_close(a, b, **EXACT)
