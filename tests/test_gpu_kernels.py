"""The GPU kernels of the LSTM family (Triton), run on the CPU in Triton's interpreter
(TRITON_INTERPRET=1) against the step loop: outputs, final states and every gradient, in float64,
for every LSTM variant the kernels cover, with lengths, initial states and recurrent dropout, and
with layer norm (its gains and biases' gradients included; a bidirectional two-layer stack too).
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

from rnnlab import Recurrent  # noqa: E402
from rnnlab.cells import cell_names  # noqa: E402
from rnnlab.cells.lstm import LSTMCell  # noqa: E402
from rnnlab.kernels import gpu  # noqa: E402

LSTM_CELLS = [c for c in cell_names() if c.startswith("lstm")]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # compiled on a GPU


def _sequence(cell, unit, zone):
    if cell == "gru-v1":
        return lambda x_proj, s, valid, mask: gpu.gru_v1_sequence(unit, x_proj, s[0], valid, mask)
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
    if not torch.cuda.is_available():  # on the CPU, send the fused backend to the kernels

        def on_kernels(self, x_proj, state, valid, mask, zone=None):
            ran = gpu.lstm_sequence(self, x_proj, state, valid, mask, zone)
            assert ran is not None  # the kernels, not the step loop
            return ran

        monkeypatch.setattr(LSTMCell, "fused_sequence", on_kernels)
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

    for a, b in zip(run(fused), run(step), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
