"""The fused kernels as torch operators: torch.compile(fullgraph=True) and torch.export trace
through them with a dynamic sequence length and batch size and match eager, forward and
gradients; every operator passes torch.library.opcheck (fake against real, schema, autograd)."""

import pytest
import torch
from cell_traits import FUSED, probe
from torch.utils._python_dispatch import TorchDispatchMode

from rnnlab import Recurrent
from rnnlab.cells import cell_names
from rnnlab.errors import ConfigError
from rnnlab.kernels.cpu import unavailable_reason

pytestmark = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"no fused kernels: {unavailable_reason()}"
)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles afresh: the modules share Recurrent.forward's code, and dynamo's limit
    on recompilations of one code object would otherwise end in a refusal after eight cells."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# The options a cell is tried with: the k-th cell of the registry takes the k-th set (and the
# next ones where a set does not apply to it), so that every cell and every option is covered.
OPTIONS = [
    {"layer_norm": True},
    {"num_layers": 2, "bidirectional": True},
    {"zoneout": 0.25},
    {},
    {"layer_norm": True, "num_layers": 2},
]


def _layer(cell, k, **extra):
    for shift in range(len(OPTIONS)):
        options = OPTIONS[(k + shift) % len(OPTIONS)]
        try:
            return Recurrent(cell, 3, 5, **options, **extra), options
        except ConfigError:
            continue
    raise AssertionError(f"no option set applies to {cell}")


def _grads(module, x, lengths):
    module.zero_grad()
    x = x.detach().requires_grad_(True)
    out, state = module(x, lengths)
    (out.square().sum() + sum(s.sum() for s in state)).backward()
    return out.detach(), [p.grad.clone() for p in module.parameters()] + [x.grad]


@pytest.mark.parametrize("k,cell", list(enumerate(cell_names())))
def test_compiled_fullgraph_matches_eager_with_gradients(k, cell):
    """Training mode (zoneout's masks are random there, so it is compared in evaluation mode),
    float64, two shapes through one compiled module: a new T and B for the fused operators, a
    new B for the unrolled step loop."""
    torch.manual_seed(k)
    layer, options = _layer(cell, k)
    layer = layer.double()
    if options.get("zoneout") or probe(cell).noisy_in_training:
        layer.eval()  # random masks or noise differ between two runs
    # Without a fused kernel the loop over the steps is unrolled for each T: short sequences, one
    # T (a new one would trace the loop again; a new B does not), and no code generation
    # (aot_eager traces the same graph, forward and backward) keep that affordable; the graph is
    # still captured whole.
    fused = cell in FUSED
    compiled = torch.compile(layer, fullgraph=True, dynamic=True,
                             backend="inductor" if fused else "aot_eager")  # fmt: skip
    for T, B in ((7, 3), (12, 5)) if fused else ((3, 3), (3, 5)):
        x = torch.randn(T, B, 3, dtype=torch.float64)
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        want, want_grads = _grads(layer, x, lengths)
        got, got_grads = _grads(compiled, x, lengths)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for g, w in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


# A cell without a fused kernel runs a Python loop over the steps, which torch.export unrolls for
# the traced length: only the fused operators give a program with a dynamic T.
@pytest.mark.parametrize("k,cell", [(k, c) for k, c in enumerate(cell_names()) if c in FUSED])
def test_exported_program_matches_eager_on_new_lengths(k, cell):
    """torch.export with T and B dynamic, lengths and an initial state as inputs; the exported
    program is run on a longer, wider batch than it was traced with."""
    torch.manual_seed(k)
    layer, _ = _layer(cell, k, batch_first=True)
    layer = layer.double().eval()
    n, widths = len(layer.cells), layer.layer_cells[0].state_widths

    def inputs(B, T):
        state = tuple(torch.randn(n, B, w * 5, dtype=torch.float64) for w in widths)
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        return torch.randn(B, T, 3, dtype=torch.float64), lengths, state

    T, B = torch.export.Dim("T", min=2, max=4096), torch.export.Dim("B", min=2, max=4096)
    state_dims = tuple({1: B} for _ in widths)
    program = torch.export.export(layer, inputs(3, 6),
                                  dynamic_shapes=({0: B, 1: T}, {0: B}, state_dims))  # fmt: skip
    x, lengths, state = inputs(7, 19)
    with torch.no_grad():
        want = layer(x, lengths, state)
    got = program.module()(x, lengths, state)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert any(str(node.target).startswith("rnnlab.") for node in program.graph.nodes), (
        "the exported graph does not hold the fused operator"
    )


class _Recorder(TorchDispatchMode):
    """Every call of an rnnlab operator, with its arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "rnnlab":
            self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


def _operator_calls():
    """Forward and backward operator calls of every cell, each with its option set (as above)."""
    found = {}
    for k, cell in enumerate(cell_names()):
        layer, _ = _layer(cell, k)
        layer = layer.double()
        x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
        recorder = _Recorder()
        with recorder:
            out, state = layer(x, torch.tensor([5, 3]))
            (out.sum() + state[0].sum()).backward()
        for func, args in recorder.calls:
            found.setdefault(f"{func.__name__}-{cell}", (func, args))
    return found


CALLS = _operator_calls() if unavailable_reason() is None else {}


@pytest.mark.parametrize("name", sorted(CALLS) or ["none"])
def test_every_operator_passes_opcheck(name):
    func, args = CALLS[name]
    # A forward's differentiable inputs require grad, as in training; a backward's none (it has
    # no autograd formula: there is no second derivative).
    forward = "_forward" in name
    args = tuple(a.detach().requires_grad_(forward and a.is_floating_point() and a.numel() > 0)
                 if isinstance(a, torch.Tensor) else a for a in args)  # fmt: skip
    torch.library.opcheck(func, args)
