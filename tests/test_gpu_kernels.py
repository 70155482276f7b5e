"""The GPU kernels (Triton), run on the CPU in Triton's interpreter (TRITON_INTERPRET=1) against
the step loop: outputs, final states and every gradient, in float64. Over the cell registry: every
cell has kernels or a reason (``Cell.gpu_refusal``), and each cell's kernels match the step loop
with each layer option they claim (``Cell.gpu_options``) and leave it the others. In depth for the
LSTM family: lengths, initial states, recurrent dropout, zoneout and layer norm (its gains and
biases' gradients included; a bidirectional two-layer stack too).
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

from cell_traits import probe  # noqa: E402

import rnnlab.recurrent as recurrent  # noqa: E402
from rnnlab import Recurrent  # noqa: E402
from rnnlab.cells import Cell, cell_names  # noqa: E402
from rnnlab.kernels import gpu, gpu_gru  # noqa: E402

LSTM_CELLS = [c for c in cell_names() if c.startswith("lstm")]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # compiled on a GPU


def _sequence(cell, unit, zone):
    if cell == "gru-v1":
        return lambda xp, s, valid, mask: gpu_gru.gru_v1_sequence(unit, xp, s[0], valid, mask)
    return lambda x_proj, s, valid, mask: gpu.lstm_sequence(unit, x_proj, s, valid, mask, zone)


CASES = [(c, False) for c in [*LSTM_CELLS, "gru-v1"]] + [(c, True) for c in LSTM_CELLS]
# Layer norm (LN(y R^T) and LN(c_t) inside the kernels): every variant, and zoneout.
LN_CASES = [(c, False) for c in LSTM_CELLS] + [("lstm-v", True), ("lstm-cifg", True)]


@pytest.mark.parametrize("cell,zoneout", CASES)
def test_kernels_match_the_step_loop_with_gradients(cell, zoneout):
    _check_against_steps(cell, zoneout, layer_norm=False, T=6)


@pytest.mark.parametrize("cell,zoneout", LN_CASES)
def test_layer_norm_kernels_match_the_step_loop_with_gradients(cell, zoneout):
    _check_against_steps(cell, zoneout, layer_norm=True, T=4)


def _check_against_steps(cell: str, zoneout: bool, layer_norm: bool, T: int) -> None:
    torch.manual_seed(0)
    layer = Recurrent(cell, 3, 5, backend="step", layer_norm=layer_norm).double().to(DEVICE)
    for p in layer.parameters():
        torch.nn.init.uniform_(p, -0.6, 0.6)
    unit = layer.layer_cells[0]
    B = 3
    x = torch.randn(T, B, 3, dtype=torch.float64, device=DEVICE)
    lengths = torch.tensor([T, 2, T - 1], device=DEVICE)
    valid = torch.arange(T, device=DEVICE)[:, None] < lengths[None, :]
    state = tuple(torch.randn(B, w * 5, dtype=torch.float64, device=DEVICE)
                  for w in unit.state_widths)  # fmt: skip
    half = torch.full((B, 5), 0.7, dtype=torch.float64, device=DEVICE)
    mask = torch.bernoulli(half) / 0.7
    # zoneout's keep masks of y and c (T, B, 2H), as Recurrent draws them in training
    third = torch.full((T, B, 10), 0.3, dtype=torch.float64, device=DEVICE)
    zone = torch.bernoulli(third) if zoneout else None

    def run(fn):
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        s = tuple(part.clone().requires_grad_(True) for part in state)
        out, final = fn(unit.project_input(xi), s)
        (out.square().sum() + sum((k + 1) * f.sum() for k, f in enumerate(final))).backward()
        grads = [p.grad.clone() for p in unit.parameters()]
        return out, final, grads, xi.grad, [part.grad for part in s]

    def steps(x_proj, s):
        outputs = []
        for t in range(T):
            new = unit.step(x_proj[t], s, mask)
            if zone is not None:
                d_y, d_c = zone[t].chunk(2, -1)
                new = (torch.lerp(new[0], s[0], d_y), torch.lerp(new[1], s[1], d_c), *new[2:])
            v = valid[t][:, None]
            new = tuple(torch.where(v, n, o) for n, o in zip(new, s, strict=True))
            outputs.append(torch.where(v, new[0], 0.0))
            s = new
        return torch.stack(outputs), s

    want = run(steps)
    kernels = _sequence(cell, unit, zone)
    got = run(lambda x_proj, s: kernels(x_proj, s, valid, mask))
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g if isinstance(g, (list, tuple)) else [g],
                        w if isinstance(w, (list, tuple)) else [w], strict=True):  # fmt: skip
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_layer_norm_kernels_in_a_bidirectional_stack(monkeypatch):
    """lstm-v with layer norm, two layers both ways, unequal lengths, recurrent dropout and
    zoneout in training: Recurrent on the kernels against Recurrent on the step loop."""
    _on_the_kernels(monkeypatch, "lstm-v")
    torch.manual_seed(0)
    kw = {"num_layers": 2, "bidirectional": True, "layer_norm": True, "recurrent_dropout": 0.3,
          "zoneout": 0.2}  # fmt: skip
    step = Recurrent("lstm-v", 3, 4, backend="step", **kw).double().to(DEVICE)
    for p in step.parameters():
        torch.nn.init.uniform_(p, -0.6, 0.6)
    fused = Recurrent("lstm-v", 3, 4, backend="fused", **kw).double().to(DEVICE)
    fused.load_state_dict(step.state_dict())
    x = torch.randn(4, 3, 3, dtype=torch.float64, device=DEVICE)
    lengths = torch.tensor([4, 2, 3], device=DEVICE)

    def run(layer):
        torch.manual_seed(1)  # the same dropout and zoneout masks for both
        xi = x.clone().requires_grad_(True)
        out, final = layer(xi, lengths)
        (out.square().sum() + sum((k + 1) * f.sum() for k, f in enumerate(final))).backward()
        return [out, *final, xi.grad, *(p.grad for p in layer.parameters())]

    want = run(step)
    assert all(w is not None for w in want)  # assert_close passes two Nones
    for a, b in zip(run(fused), want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --- every registered cell: GPU kernels that match the step loop, or a reason ---------------

GPU_CELLS = [c for c in cell_names() if probe(c).gpu_refusal is None]
LAYER_OPTIONS = {"recurrent_dropout": 0.3, "zoneout": 0.2, "layer_norm": True}


def _on_the_kernels(monkeypatch, cell: str) -> list[bool]:
    """Send a layer's forward to the cell's GPU kernels (on the CPU: in Triton's interpreter)
    and record, per call, whether they ran (rather than the fallback)."""
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


@pytest.mark.parametrize("cell", cell_names())
def test_every_cell_has_gpu_kernels_or_says_why(cell):
    unit = probe(cell)
    if unit.gpu_refusal is not None:
        assert len(unit.gpu_refusal) > 20 and not unit.gpu_options
        assert type(unit).gpu_sequence is Cell.gpu_sequence
    else:
        assert type(unit).gpu_sequence is not Cell.gpu_sequence
        assert unit.gpu_options <= set(LAYER_OPTIONS), unit.gpu_options


@pytest.mark.parametrize(
    "cell,option",
    [(c, o) for c in GPU_CELLS for o in ("none", *LAYER_OPTIONS) if o == "none" or
     probe(c).refusal(o) is None],
)  # fmt: skip
def test_gpu_kernels_match_the_step_loop_or_leave_it_the_options_they_lack(
    cell, option, monkeypatch
):
    """A bidirectional layer in training, unequal lengths (one empty), float64: outputs, final
    states and every gradient on the kernels equal the step loop's; an option outside the
    cell's ``gpu_options`` leaves the step loop running (the kernels decline it)."""
    options = {} if option == "none" else {option: LAYER_OPTIONS[option]}
    torch.manual_seed(0)
    ref = Recurrent(cell, 3, 5, bidirectional=True, backend="step", **options).double()
    for p in ref.parameters():
        torch.nn.init.uniform_(p, -0.6, 0.6)
    covered = option == "none" or option in probe(cell).gpu_options
    # "fused" sends a covered layer to the kernels (not to torch's layer, which "auto" may
    # choose); an uncovered one falls back under "auto" (to the CPU kernels here)
    backend = "fused" if covered else "auto"
    fast = Recurrent(cell, 3, 5, bidirectional=True, backend=backend, **options).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 0, 3])

    def run(layer):
        torch.manual_seed(1)  # the same dropout and zoneout masks on both
        xi = x.clone().requires_grad_(True)
        out, final = layer(xi, lengths=lengths)
        (out.square().sum() + sum((k + 1) * f.sum() for k, f in enumerate(final))).backward()
        return [out, *final, xi.grad, *(p.grad for p in layer.parameters())]

    want = run(ref)
    ran = _on_the_kernels(monkeypatch, cell)
    got = run(fast)
    assert ran == ([True] * 2 if covered else [False] * len(ran)), f"kernels ran: {ran}"
    # Every gradient exists (assert_close passes two Nones): the step loop reaches every
    # parameter, so a None from the kernels would fail below.
    assert all(w is not None for w in want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_lstm_kernels_take_non_contiguous_initial_states():
    """y0 and c0 as transposed views: the backward reads the same contiguous copies as the
    forward (c0's gradient was wrong when the backward read the view's memory by arithmetic)."""
    torch.manual_seed(0)
    unit = Recurrent("lstm-v", 3, 5).double().to(DEVICE).layer_cells[0]
    x_proj = torch.randn(4, 3, 4 * 5, dtype=torch.float64, device=DEVICE)
    starts = [torch.randn(5, 3, dtype=torch.float64, device=DEVICE) for _ in range(2)]

    def run(transposed):
        leaves = [s.clone().requires_grad_(True) for s in starts]
        state = tuple(s.t() if transposed else s.t().contiguous() for s in leaves)
        out, (yT, cT) = gpu.lstm_sequence(unit, x_proj, state, None, None)
        (out.square().sum() + yT.sum() + 2 * cT.sum()).backward()
        return [out, yT, cT, *(s.grad for s in leaves)]

    for a, b in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
