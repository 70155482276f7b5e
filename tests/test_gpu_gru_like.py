"""The GPU kernels of tanh, EGRU, NC-GRU and GateL0RD (rnnlab.kernels.gpu_gru_like), run on the
CPU in Triton's interpreter against the step loop, in float64 with every gradient: what the
registry test (test_gpu_kernels.py) does not reach: given initial states and their gradients,
the cells' statistics and penalties, their own arguments, a two-layer stack, evaluation mode,
float32."""

import os

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed")
if not torch.cuda.is_available():
    # Before the kernels are defined (decorated): Triton decides there whether they are
    # interpreted, and torch may have imported Triton (and read TRITON_INTERPRET) already.
    os.environ["TRITON_INTERPRET"] = "1"
    triton.knobs.runtime.interpret = True

from cell_traits import probe  # noqa: E402

import rnnlab.recurrent as recurrent  # noqa: E402
from rnnlab import Recurrent  # noqa: E402

CELLS = ["tanh", "egru", "nc-gru", "gatel0rd"]
# The layer options each cell takes (all of them on its kernels), as a training run sets them.
OPTIONS = {
    "tanh": {"recurrent_dropout": 0.3, "zoneout": 0.2, "layer_norm": True},
    "egru": {"recurrent_dropout": 0.3},
    "nc-gru": {"recurrent_dropout": 0.3},
    "gatel0rd": {},
}
T, B, H, I = 5, 3, 5, 3


def _on_the_kernels(monkeypatch, cell: str) -> list[bool]:
    """Route a layer's forward to the cell's GPU kernels (on the CPU: the interpreter) and
    record, per call, whether they ran rather than declined."""
    ran: list[bool] = []
    cls = type(probe(cell))
    kernels = cls.gpu_sequence

    def recorded(self, *args, **kwargs):
        out = kernels(self, *args, **kwargs)
        ran.append(out is not None)
        return out

    monkeypatch.setattr(recurrent, "_on_gpu", lambda x: True)
    monkeypatch.setattr(cls, "gpu_sequence", recorded)
    return ran


def _pair(cell: str, hidden: int = H, **kw) -> tuple[Recurrent, Recurrent]:
    """A step-loop layer with weights U(-0.6, 0.6) and a kernel layer with the same state."""
    torch.manual_seed(0)
    step = Recurrent(cell, I, hidden, backend="step", **kw).double()
    for p in step.parameters():
        torch.nn.init.uniform_(p, -0.6, 0.6)
    fast = Recurrent(cell, I, hidden, backend="fused", **kw).double()
    fast.load_state_dict(step.state_dict())
    return step, fast


def _run(layer: Recurrent, x: torch.Tensor, lengths, state, penalised: bool = False) -> list:
    """Outputs, final state, penalty, statistics and the gradients of x, the initial state and
    every parameter under one loss (the same dropout, zoneout and noise draws on every call)."""
    torch.manual_seed(1)
    layer.zero_grad()
    xi = x.clone().requires_grad_(True)
    s = None if state is None else tuple(p.clone().requires_grad_(True) for p in state)
    out, final = layer(xi, lengths=lengths, state=s)
    loss = out.square().sum() + sum((k + 1) * f.sum() for k, f in enumerate(final))
    penalty = layer.penalty()
    if penalised and penalty is not None:
        loss = loss + 100.0 * penalty
    loss.backward()
    # An initial state part that no step reads (GateL0RD's L without padding) has no gradient
    # on the step loop and a zero one on the kernels.
    zero = torch.zeros_like
    grads = [xi.grad, *(() if s is None else (zero(p) if p.grad is None else p.grad for p in s))]
    grads += [p.grad for p in layer.parameters()]
    stats = layer.statistics()
    return [out, *final, *([] if penalty is None else [penalty]), *grads], stats


def _check(cell: str, monkeypatch, *, state: bool = True, train: bool = True,
           penalised: bool = False, lengths: bool = True, hidden: int = H,
           **kw) -> dict[str, float]:  # fmt: skip
    """The kernel layer against the step loop (unequal lengths, one of them 0, or none);
    returns the step loop's statistics after checking that the kernels' equal them."""
    step, fast = _pair(cell, hidden, **kw)
    step.train(train)
    fast.train(train)
    layers = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = torch.tensor([T, 0, T - 2]) if lengths else None
    s0 = None
    if state:
        unit = step.layer_cells[0]
        s0 = tuple(torch.randn(layers, B, w * hidden, dtype=torch.float64) * 0.5
                   for w in unit.state_widths)  # fmt: skip
    want, want_stats = _run(step, x, lengths, s0, penalised)
    ran = _on_the_kernels(monkeypatch, cell)
    got, got_stats = _run(fast, x, lengths, s0, penalised)
    assert ran == [True] * layers, f"kernels ran: {ran}"
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert got_stats.keys() == want_stats.keys()
    for name, value in want_stats.items():
        assert got_stats[name] == pytest.approx(value, rel=1e-12, abs=1e-12)
    return want_stats


@pytest.mark.parametrize("cell", CELLS)
def test_initial_state_and_its_gradient_with_every_option(cell, monkeypatch):
    _check(cell, monkeypatch, **OPTIONS[cell])


@pytest.mark.parametrize("cell", CELLS)
def test_a_two_layer_bidirectional_stack(cell, monkeypatch):
    _check(cell, monkeypatch, num_layers=2, bidirectional=True, **OPTIONS[cell])


@pytest.mark.parametrize("cell", CELLS)
def test_evaluation_mode_without_lengths(cell, monkeypatch):
    """No dropout or noise; zoneout's keep masks are then its probability p; every step
    valid (the kernels without their padding rule)."""
    _check(cell, monkeypatch, train=False, lengths=False, **OPTIONS[cell])


@pytest.mark.parametrize("cell", CELLS)
def test_float32_is_close_to_float64(cell, monkeypatch):
    """The kernels in float32 (their constants and scalars stay float32) near the step loop in
    float64."""
    step, _ = _pair(cell, **OPTIONS[cell])
    step.eval()
    fast = Recurrent(cell, I, H, backend="fused", **OPTIONS[cell]).float().eval()
    fast.load_state_dict(step.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = torch.tensor([T, 1, T - 2])
    want, _ = step(x, lengths)
    ran = _on_the_kernels(monkeypatch, cell)
    got, final = fast(x.float(), lengths)
    assert ran == [True]
    assert got.dtype == torch.float32 and final[0].dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


# Cell arguments that change what a step computes (thr_mean only initialises EGRU's theta).
ARGS = {
    "egru": {"dampening": 0.5, "support": 3.6},  # a narrow triangle: some units pass nothing
    "nc-gru": {"negatives": 1, "neumann_order": 3, "refresh": 1},
    "gatel0rd": {"l0_lambda": 0.5, "gate_noise": 0.4},
}
STATISTICS = {"egru": "activity", "gatel0rd": "gate_openings"}


@pytest.mark.parametrize("cell", [c for c in CELLS if c in ARGS])
def test_cell_arguments(cell, monkeypatch):
    _check(cell, monkeypatch, cell_args=ARGS[cell], **OPTIONS[cell])


@pytest.mark.parametrize("cell", [c for c in CELLS if c in STATISTICS])
def test_statistics_and_penalty_equal_the_step_loops(cell, monkeypatch):
    """``Recurrent.statistics()`` (checked in ``_check``) and ``penalty()``, the penalty in the
    loss (its gradient through the kernels' tallies), over a two-layer stack."""
    stats = _check(cell, monkeypatch, penalised=True, num_layers=2, **OPTIONS[cell])
    assert 0.0 < stats[STATISTICS[cell]] < 1.0


@pytest.mark.parametrize("cell", CELLS)
def test_more_units_than_one_program_holds(cell, monkeypatch):
    """H = 300: two programs per batch row (BLOCK 256; layer norm's one program per row spans
    512), so a program's unit offset is exercised."""
    _check(cell, monkeypatch, hidden=300, **OPTIONS[cell])
