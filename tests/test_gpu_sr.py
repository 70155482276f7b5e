"""The state-regularised cells' GPU kernels (rnnlab.kernels.gpu_sr), run on the CPU in Triton's
interpreter, against the step loop in float64: outputs, final states and every gradient (the
input's, the initial state's, the weights', the centroids' and the peepholes'), with the cells'
arguments (k centroids, temperature tau, peepholes), unequal lengths with an empty row, recurrent
dropout, a bidirectional two-layer stack, H in several blocks of a row program, and float32.
(The registry test in test_gpu_kernels.py covers a plain bidirectional layer.)"""

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
from rnnlab.cells import SRGRUCell, SRLSTMCell  # noqa: E402
from rnnlab.kernels import gpu_sr  # noqa: E402

CLASSES = {"sr-gru": SRGRUCell, "sr-lstm": SRLSTMCell}
T, B, I, H = 5, 3, 3, 5
LENGTHS = torch.tensor([5, 0, 3])


def _on_the_kernels(monkeypatch, cell: str) -> list[bool]:
    """Route a layer to the GPU kernels on the CPU and record whether each call ran them."""
    ran: list[bool] = []
    cls = CLASSES[cell]
    kernels = cls.gpu_sequence

    def recorded(self, *args, **kwargs):
        out = kernels(self, *args, **kwargs)
        ran.append(out is not None)
        return out

    monkeypatch.setattr(recurrent, "_on_gpu", lambda x: True)
    monkeypatch.setattr(cls, "gpu_sequence", recorded)
    return ran


def _compare(monkeypatch, cell, cell_args, layers=1, bidirectional=False, dtype=torch.float64,
             tol=(1e-10, 1e-12), expect_kernels=True, **options):  # fmt: skip
    """Recurrent on the kernels (in ``dtype``) against Recurrent on the step loop (float64), in
    training, from a given initial state: every output and gradient."""
    torch.manual_seed(0)
    kw = {"bidirectional": bidirectional, "cell_args": cell_args, **options}
    ref = Recurrent(cell, I, H, layers, backend="step", **kw).double()
    for p in ref.parameters():
        torch.nn.init.uniform_(p, -0.6, 0.6)
    backend = "fused" if expect_kernels else "auto"
    fast = Recurrent(cell, I, H, layers, backend=backend, **kw).to(dtype)
    fast.load_state_dict(ref.state_dict())
    D = 2 if bidirectional else 1
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=gen)
    widths = ref.layer_cells[0].state_widths
    state = [torch.randn(layers * D, B, w * H, dtype=torch.float64, generator=gen) / 2
             for w in widths]  # fmt: skip
    weights = torch.randn(T, B, D * H, dtype=torch.float64, generator=gen)

    def run(layer, dt):
        torch.manual_seed(3)  # the same dropout masks on both
        xi = x.to(dt).requires_grad_()
        s = tuple(part.to(dt).requires_grad_() for part in state)
        out, final = layer(xi, lengths=LENGTHS, state=s)
        loss = (out * weights.to(dt)).sum() + sum((f * f.cos()).sum() for f in final)
        grads = torch.autograd.grad(loss, [xi, *s, *layer.parameters()])
        return [out, *final, *grads]

    want = run(ref, torch.float64)
    ran = _on_the_kernels(monkeypatch, cell)
    got = run(fast, dtype)
    assert ran == [expect_kernels] * layers * D, f"kernels ran: {ran}"
    names = ["out", *(f"final {k}" for k in range(len(widths))), "d x",
             *(f"d state {k}" for k in range(len(widths))),
             *(f"d {n}" for n, _ in ref.named_parameters())]  # fmt: skip
    for name, g, w in zip(names, got, want, strict=True):
        assert g.dtype == dtype, name
        message = f"{name}: " + "{}"
        torch.testing.assert_close(g.double(), w, rtol=tol[0], atol=tol[1], msg=message.format)


ARGS = [
    ("sr-gru", {}),  # k 10, tau 1
    ("sr-gru", {"centroids": 3, "temperature": 0.1}),
    ("sr-lstm", {}),  # SR-LSTM-P: peepholes, k 10, tau 1
    ("sr-lstm", {"peepholes": False, "centroids": 3, "temperature": 0.1}),
    ("sr-lstm", {"peepholes": True, "centroids": 3, "temperature": 0.1}),
]


@pytest.mark.parametrize("cell,cell_args", ARGS)
def test_cell_arguments_with_initial_state_lengths_and_dropout(cell, cell_args, monkeypatch):
    _compare(monkeypatch, cell, cell_args, recurrent_dropout=0.3)


@pytest.mark.parametrize("cell", ["sr-gru", "sr-lstm"])
def test_bidirectional_two_layer_stack(cell, monkeypatch):
    _compare(monkeypatch, cell, {"centroids": 4, "temperature": 0.5}, layers=2,
             bidirectional=True, recurrent_dropout=0.2, dropout=0.3)  # fmt: skip


@pytest.mark.parametrize("cell", ["sr-gru", "sr-lstm"])
def test_hidden_units_in_several_blocks(cell, monkeypatch):
    """A row program walks H in blocks: with k 3 (BLOCK_K 4) and a tile of 8, BLOCK_H is 2 and
    H = 5 takes three blocks, the last one partial."""
    monkeypatch.setattr(gpu_sr, "TILE", 8)
    assert gpu_sr._row_blocks(H, 3) == {"BLOCK_H": 2, "BLOCK_K": 4}
    _compare(monkeypatch, cell, {"centroids": 3, "temperature": 0.1}, recurrent_dropout=0.3)


@pytest.mark.parametrize("cell", ["sr-gru", "sr-lstm"])
def test_float32_is_close_to_float64_steps(cell, monkeypatch):
    """Without recurrent dropout: torch draws other masks in float32 than in float64."""
    _compare(monkeypatch, cell, {"temperature": 0.1}, dtype=torch.float32, tol=(1e-4, 1e-5))


def test_more_centroids_than_a_row_program_holds_leave_it_to_the_fallback(monkeypatch):
    monkeypatch.setattr(gpu_sr, "MAX_CENTROIDS", 2)
    _compare(monkeypatch, "sr-gru", {"centroids": 3}, expect_kernels=False)


def test_inference_without_gradients(monkeypatch):
    """Under no_grad (evaluation) the kernels' outputs equal the step loop's."""
    torch.manual_seed(0)
    ref = Recurrent("sr-lstm", I, H, backend="step").double().eval()
    fast = Recurrent("sr-lstm", I, H, backend="fused").double().eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        want = ref(x, lengths=LENGTHS)
        ran = _on_the_kernels(monkeypatch, "sr-lstm")
        got = fast(x, lengths=LENGTHS)
    assert ran == [True]
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
    for g, w in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
