"""The uBRU's fused kernels (csrc/bru.cpp, ``rnnlab.kernels.ops_bru``): filter and smoothing
against the step loop and ``smooth``'s PyTorch recursion (outputs, final states, every gradient),
finite differences and ``torch.library.opcheck`` on the operators themselves. Inputs are large
enough that the clamp of W x at 10 is active in some entries and not in others."""

import pytest
import torch
from torch.autograd import gradcheck
from torch.utils._python_dispatch import TorchDispatchMode

from rnnlab import Recurrent
from rnnlab.kernels import cpu

pytestmark = pytest.mark.skipif(
    cpu.extension() is None, reason=f"fused CPU extension unavailable: {cpu.unavailable_reason()}"
)


class _Operators(TorchDispatchMode):
    """The names of the rnnlab operators called inside it."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "rnnlab":
            self.names.add(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def _pair(num_layers, bidirectional, smoothing, dtype):
    options = dict(bidirectional=bidirectional, cell_args={"smoothing": smoothing})
    ref = Recurrent("bru", 5, 6, num_layers, backend="step", **options).to(dtype)
    fast = Recurrent("bru", 5, 6, num_layers, backend="fused", **options).to(dtype)
    with torch.no_grad():
        for cell in ref.layer_cells:
            cell.theta.copy_(1.5 * torch.randn(3, 6, generator=torch.Generator().manual_seed(3)))
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _outputs_and_grads(layer, x, lengths, h0, weights):
    x = x.detach().clone().requires_grad_()
    h0 = h0.detach().clone().requires_grad_()
    out, (a_T,) = layer(x, lengths=lengths, state=(h0,))
    loss = (out * weights).sum() + (a_T * a_T).sum()
    return [out, a_T, *torch.autograd.grad(loss, [x, h0, *layer.parameters()])]


@pytest.mark.parametrize("smoothing", [True, False])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_matches_the_step_loop(smoothing, num_layers, bidirectional, dtype):
    """Outputs, final states and the gradients of the input, the initial state, weight_ih and
    theta, with unequal lengths (an empty sequence among them); both kernels run."""
    gen = torch.Generator().manual_seed(num_layers)
    T, B = 11, 5
    ref, fast = _pair(num_layers, bidirectional, smoothing, dtype)
    x = 8 * torch.randn(T, B, 5, dtype=dtype, generator=gen)
    x_proj = ref.layer_cells[0].project_input(x).detach()
    assert (x_proj > 10).any() and (x_proj < 10).any(), "the clamp is both active and not"
    lengths = torch.tensor([11, 4, 0, 1, 8])
    n = num_layers * (2 if bidirectional else 1)
    h0 = torch.rand(n, B, 6, dtype=dtype, generator=gen)
    weights = torch.randn(T, B, ref.output_size, dtype=dtype, generator=gen)
    want = _outputs_and_grads(ref, x, lengths, h0, weights)
    with _Operators() as seen:
        got = _outputs_and_grads(fast, x, lengths, h0, weights)
    kernels = {"bru_filter_forward", "bru_filter_backward"}
    if smoothing:
        kernels |= {"bru_smooth_forward", "bru_smooth_backward"}
    assert seen.names == kernels
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **tol)


def test_inference_without_lengths_matches_the_step_loop():
    ref, fast = _pair(1, False, True, torch.float64)
    x = 4 * torch.randn(7, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        got, want = fast(x), ref(x)
    for g, w in zip([got[0], *got[1]], [want[0], *want[1]], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert not got[0].requires_grad


def _operator_inputs(gen):
    """x_proj with entries clamped (> 10) and not, none within 0.5 of the clamp (finite
    differences must not cross it); transitions and states in (0, 1)."""
    T, B, H = 6, 3, 4
    x_proj = 6 * torch.randn(T, B, H, dtype=torch.float64, generator=gen)
    x_proj = torch.where((x_proj - 10).abs() < 0.5, x_proj - 1, x_proj)
    x_proj[0, 0, :2] = torch.tensor([11.0, 13.0], dtype=torch.float64)
    p1, p2 = torch.rand(2, H, dtype=torch.float64, generator=gen) * 0.8 + 0.1
    a0 = torch.rand(B, H, dtype=torch.float64, generator=gen) * 0.8 + 0.1
    return x_proj, p1, p2, a0


@pytest.mark.parametrize("padded", [False, True])
def test_gradcheck_of_the_operators(padded):
    """Finite differences through the filter and the smoothing operators, chained as a layer
    chains them; with padding, a valid mask that is not a prefix too (the filter takes any)."""
    x_proj, p1, p2, a0 = _operator_inputs(torch.Generator().manual_seed(0))
    T, B, _ = x_proj.shape
    valid = torch.empty(0, dtype=torch.bool)
    lengths = None
    if padded:
        lengths = torch.tensor([6, 3, 1])
        valid = torch.arange(T)[:, None] < lengths[None, :]
        valid[2, 0] = False  # a gap inside a sequence: the state carries over it
    ops = torch.ops.rnnlab
    lengths_t = torch.empty(0, dtype=torch.int64) if lengths is None else lengths

    def f(x_proj, p1, p2, a0):
        Y, a_T = ops.bru_filter_forward(x_proj, p1, p2, a0, valid)
        return Y, a_T, ops.bru_smooth_forward(Y, p1, p2, lengths_t)

    inputs = tuple(t.requires_grad_() for t in (x_proj, p1, p2, a0))
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_filter_carries_the_state_over_a_gap_as_the_step_loop():
    """valid need not be a prefix: a padded step keeps the state and outputs 0."""
    x_proj, p1, p2, a0 = _operator_inputs(torch.Generator().manual_seed(1))
    valid = torch.ones(x_proj.shape[:2], dtype=torch.bool)
    valid[1:3, 1] = False
    Y, a_T = torch.ops.rnnlab.bru_filter_forward(x_proj, p1, p2, a0, valid)
    a = a0
    for t in range(x_proj.shape[0]):
        q = p1 * a + p2 * (1 - a)
        new = q / (q + torch.exp(x_proj[t].clamp(max=10.0)) * (1 - q) + 1e-11)
        v = valid[t, :, None]
        a = torch.where(v, new, a)
        torch.testing.assert_close(Y[t], torch.where(v, new, 0.0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a_T, a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("padded", [False, True])
def test_smooth_kernel_matches_the_pytorch_recursion(padded):
    """``smooth(fused=True)`` against ``smooth(fused=False)``, the reference, on the cell."""
    cell = Recurrent("bru", 5, 4).double().layer_cells[0]
    with torch.no_grad():
        cell.theta.normal_(0, 1.5)
    gen = torch.Generator().manual_seed(2)
    filtered = torch.rand(7, 3, 4, dtype=torch.float64, generator=gen) * 0.98 + 0.01
    lengths = torch.tensor([7, 2, 5]) if padded else None
    if padded:
        filtered = torch.where(torch.arange(7)[:, None, None] < lengths[None, :, None],
                               filtered, 0.0)  # fmt: skip
    dgamma = torch.randn(7, 3, 4, dtype=torch.float64, generator=gen)
    results = []
    for fused in (False, True):
        f = filtered.clone().requires_grad_()
        gamma = cell.smooth(f, lengths, fused=fused)
        grads = torch.autograd.grad((gamma * dgamma).sum(), [f, cell.theta])
        results.append([gamma, *grads])
    for g, w in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_operators_pass_opcheck(dtype):
    x_proj, p1, p2, a0 = (t.to(dtype) for t in _operator_inputs(torch.Generator().manual_seed(3)))
    T, B, H = x_proj.shape
    lengths = torch.tensor([6, 3, 1])
    valid = torch.arange(T)[:, None] < lengths[None, :]
    ops = torch.ops.rnnlab
    Y, a_T = ops.bru_filter_forward(x_proj, p1, p2, a0, valid)
    gamma = ops.bru_smooth_forward(Y, p1, p2, lengths)
    grad = torch.randn_like(Y)
    absent = (torch.empty(0, dtype=torch.bool), torch.empty(0, dtype=torch.int64))
    for v, n in ((valid, lengths), absent):
        Yd = Y.detach().requires_grad_()
        p1d, p2d = p1.detach().requires_grad_(), p2.detach().requires_grad_()
        x_d, a0d = x_proj.detach().requires_grad_(), a0.detach().requires_grad_()
        torch.library.opcheck(ops.bru_filter_forward, (x_d, p1d, p2d, a0d, v))
        torch.library.opcheck(ops.bru_smooth_forward, (Yd, p1d, p2d, n))
    d_aT = torch.randn_like(a_T)
    torch.library.opcheck(ops.bru_filter_backward, (grad, d_aT, x_proj, Y, p1, p2, a0, valid))
    torch.library.opcheck(ops.bru_smooth_backward, (grad, Y, gamma, p1, p2, lengths))


@pytest.mark.parametrize("smoothing", [True, False])
def test_nan_and_saturation_as_the_step_loop(smoothing):
    """Built with -ffast-math, the kernels must still carry a NaN of the input through (min(NaN,
    10) is NaN, its gradient 0, as torch's clamp), and huge inputs on both sides of the clamp
    must saturate as on the step loop."""
    ref, fast = _pair(1, False, smoothing, torch.float32)
    for x in (torch.randn(5, 2, 5), torch.randn(30, 2, 5) * 1e4):
        if x.shape[0] == 5:
            x[2, 0, 1] = float("nan")
        results = []
        for layer in (ref, fast):
            layer.zero_grad()
            xx = x.clone().requires_grad_()
            out, (a_T,) = layer(xx)
            (out.nan_to_num().sum() + a_T.nan_to_num().sum()).backward()
            results.append([out, a_T, xx.grad, *(p.grad for p in layer.parameters())])
        assert bool(torch.isnan(results[0][0]).any()) == (x.shape[0] == 5)
        for g, w in zip(*reversed(results), strict=True):
            assert torch.equal(torch.isnan(g), torch.isnan(w))
            torch.testing.assert_close(g.nan_to_num(), w.nan_to_num(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("options", [{"quant_bits": 4}, {"norm": "batch"}])
def test_step_options_run_the_step_loop_and_its_smoothing(options):
    """quant_bits rounds each step's output and a step normalisation normalises each step's W x,
    so the filter runs the step loop; the smoothing then takes the PyTorch recursion too, and the
    auto backend computes what "step" does."""
    ref = Recurrent("bru", 5, 6, backend="step", **options).double()
    auto = Recurrent("bru", 5, 6, **options).double()
    auto.load_state_dict(ref.state_dict())
    x = 8 * torch.randn(7, 3, 5, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5])
    with _Operators() as seen:
        got = auto(x, lengths=lengths)[0]
    assert seen.names == set()
    torch.testing.assert_close(got, ref(x, lengths=lengths)[0], rtol=0, atol=0)
