"""float64 finite-difference gradient checks through Recurrent, for every cell."""

import pytest
import torch
from cell_traits import EXACT, probe, takes
from torch.autograd import gradcheck

from rnnlab import Recurrent


# Cells with a surrogate gradient (exact_gradient False) are checked against their surrogate in
# tests/test_equations.py instead: finite differences see the step function's zero derivative.
@pytest.mark.parametrize("cell", EXACT)
@pytest.mark.parametrize("layer_norm", [False, True])
def test_gradcheck(cell, layer_norm):
    if layer_norm and not takes(cell, "layer_norm"):
        pytest.skip(f"{cell} does not take layer_norm")
    torch.manual_seed(0)
    # H = 3: layer norm over two units is +-1 everywhere, which finite differences cannot check.
    layer = Recurrent(cell, 3, 3, 2, bidirectional=True, layer_norm=layer_norm).double()
    if probe(cell).noisy_in_training:
        layer.eval()  # each evaluation would draw new noise
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        params = dict(zip(names, ps, strict=True))
        out, state = torch.func.functional_call(layer, params, (x,), {"lengths": lengths})
        return out, *state

    inputs = (x, *[p.detach().clone().requires_grad_() for p in layer.parameters()])
    # fast_mode checks random projections of the Jacobian: the same test, far fewer evaluations.
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)
