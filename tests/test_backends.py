"""The fused CPU backend against the step-by-step reference: outputs, states, every gradient."""

import os
import subprocess
import sys

import pytest
import torch
from cell_traits import EXACT, FUSED, probe, usable
from torch.autograd import gradcheck

import rnnlab
from rnnlab import Recurrent
from rnnlab.errors import ConfigError
from rnnlab.kernels import build, cpu

LSTMS = [n for n in rnnlab.cell_names() if n.startswith("lstm")]
needs_extension = pytest.mark.skipif(
    cpu.extension() is None, reason=f"fused CPU extension unavailable: {cpu.unavailable_reason()}"
)


def _pair(cell, I, H, L, bidirectional, dtype, **options):
    ref = Recurrent(cell, I, H, L, bidirectional=bidirectional, backend="step", **options)
    fast = Recurrent(cell, I, H, L, bidirectional=bidirectional, backend="fused", **options)
    ref.to(dtype)
    fast.to(dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _outputs_and_grads(layer, x, lengths, weights, seed):
    torch.manual_seed(seed)  # the same recurrent-dropout masks on both backends
    x = x.detach().clone().requires_grad_()
    out, state = layer(x, lengths=lengths)
    loss = (out * weights).sum() + sum((s * s).sum() for s in state)
    grads = torch.autograd.grad(loss, [x, *layer.parameters()])
    return [out, *state, *grads]


@needs_extension
@pytest.mark.parametrize("cell", FUSED)
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_matches_step_float64(cell, seed):
    gen = torch.Generator().manual_seed(seed)
    T, B, I, H = (int(v) for v in torch.randint(1, 9, (4,), generator=gen))
    T += 1
    L = 1 + seed
    rdrop = 0.0 if cell in ("mingru", "minlstm") else 0.3 * seed
    ref, fast = _pair(cell, I, H, L, bool(seed), torch.float64,
                      **usable(cell, recurrent_dropout=rdrop))  # fmt: skip
    x = torch.randn(T, B, I, dtype=torch.float64, generator=gen)
    lengths = torch.randint(0, T + 1, (B,), generator=gen) if seed else None
    weights = torch.randn(T, B, ref.output_size, dtype=torch.float64, generator=gen)
    for a, b in zip(
        _outputs_and_grads(ref, x, lengths, weights, seed),
        _outputs_and_grads(fast, x, lengths, weights, seed),
        strict=True,
    ):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@needs_extension
@pytest.mark.parametrize("cell", FUSED)
def test_fused_matches_step_float32(cell):
    """float32 at random sizes (seeded per cell), random lengths, two bidirectional layers."""
    gen = torch.Generator().manual_seed(FUSED.index(cell))
    T, B = (int(v) for v in torch.randint(5, 40, (2,), generator=gen))
    I, H = (int(v) for v in torch.randint(8, 96, (2,), generator=gen))
    ref, fast = _pair(cell, I, H, 2, True, torch.float32)
    x = torch.randn(T, B, I, generator=gen)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    weights = torch.randn(T, B, 2 * H, generator=gen)
    for a, b in zip(
        _outputs_and_grads(ref, x, lengths, weights, 0),
        _outputs_and_grads(fast, x, lengths, weights, 0),
        strict=True,
    ):
        # Summation order differs: errors scale with the size of the values (large for NFG,
        # whose cell state is not bounded), so atol is relative to the largest of them.
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(1.0, a.abs().max().item()))


@needs_extension
@pytest.mark.parametrize("cell", [c for c in LSTMS if c != "lstm-fgr"])
@pytest.mark.parametrize("training", [True, False])
def test_float32_at_partial_panels_and_tiles_matches_step(cell, training):
    """float32 (the packed recurrent product's type) at widths that fill its 32-column panels
    wholly and partly (H = 16, 37) and batches that leave partial 8-row tiles (B = 1, 13), with
    zoneout, recurrent dropout, lengths and peepholes, with and without gradients."""
    gen = torch.Generator().manual_seed(LSTMS.index(cell))
    for H, B in ((16, 13), (37, 1), (37, 13)):
        ref, fast = _pair(cell, 6, H, 1, True, torch.float32, zoneout=0.3, recurrent_dropout=0.2)
        ref.train(training)
        fast.train(training)
        x = torch.randn(9, B, 6, generator=gen)
        lengths = torch.randint(1, 10, (B,), generator=gen)
        weights = torch.randn(9, B, 2 * H, generator=gen)
        for a, b in zip(
            _outputs_and_grads(ref, x, lengths, weights, 2),
            _outputs_and_grads(fast, x, lengths, weights, 2),
            strict=True,
        ):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(1.0, a.abs().max().item()))
        with torch.no_grad():
            torch.manual_seed(4)
            expected = ref(x, lengths=lengths)[0]
            torch.manual_seed(4)
            torch.testing.assert_close(fast(x, lengths=lengths)[0], expected, rtol=1e-5, atol=1e-5)


@needs_extension
@pytest.mark.parametrize("cell", [c for c in FUSED if probe(c).tally_names])
def test_fused_records_the_step_statistics_and_penalty_of_the_step_loop(cell):
    """The statistics (EGRU's activity, GateL0RD's gate openings) and the penalty, with its
    gradient, that a trainer reads after a forward pass: the same on both paths (padding, an
    empty row, two bidirectional layers, training noise under one seed)."""
    gen = torch.Generator().manual_seed(7)
    ref, fast = _pair(cell, 4, 6, 2, True, torch.float64)
    # 20 steps: the spiking cells' neurons, from rest, take several steps to reach threshold.
    x = torch.randn(20, 5, 4, dtype=torch.float64, generator=gen)
    lengths = torch.tensor([20, 4, 0, 1, 7])
    seen = []
    for layer in (ref, fast):
        torch.manual_seed(3)
        layer(x, lengths=lengths)
        penalty = layer.penalty()
        grads = [] if penalty is None else torch.autograd.grad(penalty, list(layer.parameters()),
                                                               allow_unused=True)  # fmt: skip
        seen.append((layer.statistics(), penalty, grads))
    (want, want_penalty, want_grads), (got, got_penalty, got_grads) = seen
    assert set(got) == set(probe(cell).tally_names) and min(got.values()) > 0
    assert got == pytest.approx(want, rel=1e-12)
    assert (got_penalty is None) == (want_penalty is None)
    if want_penalty is not None:
        torch.testing.assert_close(got_penalty, want_penalty, rtol=1e-12, atol=0)
        assert any(g is not None and g.abs().sum() > 0 for g in got_grads)
        for g, w in zip(got_grads, want_grads, strict=True):
            assert (g is None) == (w is None)
            if w is not None:
                torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@needs_extension
@pytest.mark.parametrize("cell", [c for c in FUSED if c in EXACT])  # surrogates: test_equations
def test_gradcheck_through_the_fused_backward(cell):
    layer = Recurrent(cell, 3, 3, backend="fused").double()
    layer.train(not probe(cell).noisy_in_training)  # each evaluation would draw new noise
    names = [n for n, _ in layer.named_parameters()]
    lengths = torch.tensor([4, 2])
    h0 = tuple(torch.randn(1, 2, w * 3, dtype=torch.float64, requires_grad=True)
               for w in layer.layer_cells[0].state_widths)  # fmt: skip

    def f(x, *rest):
        params = dict(zip(names, rest[len(h0) :], strict=True))
        out, state = torch.func.functional_call(
            layer, params, (x,), {"lengths": lengths, "state": rest[: len(h0)]}
        )
        return out, *state

    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert gradcheck(f, (x, *h0, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_extension
def test_inference_without_gradients_matches():
    ref, fast = _pair("lstm-v", 5, 7, 1, False, torch.float64)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        out, state = fast(x)
    torch.testing.assert_close(out, ref(x)[0], rtol=1e-10, atol=1e-12)
    assert not out.requires_grad


@needs_extension
@pytest.mark.parametrize("cell", [*LSTMS, "gru", "gru-v1", "tanh"])
@pytest.mark.parametrize("training", [True, False])
def test_fused_zoneout_matches_step_float64(cell, training):
    """Zoneout on the fused kernels: the same masks (drawn once for all steps), the same
    outputs, states and gradients as the step loop, with lengths and two bidirectional layers."""
    gen = torch.Generator().manual_seed(FUSED.index(cell))
    T, B, I, H = 7, 4, 5, 6
    ref, fast = _pair(cell, I, H, 2, True, torch.float64, zoneout=0.3, recurrent_dropout=0.2)
    ref.train(training)
    fast.train(training)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=gen)
    lengths = torch.tensor([7, 5, 1, 3])
    weights = torch.randn(T, B, 2 * H, dtype=torch.float64, generator=gen)
    for a, b in zip(
        _outputs_and_grads(ref, x, lengths, weights, 3),
        _outputs_and_grads(fast, x, lengths, weights, 3),
        strict=True,
    ):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@needs_extension
@pytest.mark.parametrize("cell", ["lstm-v", "lstm-cifg", "lstm-fgr", "gru", "gru-v1", "tanh"])
def test_gradcheck_through_fused_zoneout(cell):
    layer = Recurrent(cell, 3, 3, backend="fused", zoneout=0.4).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)

    def run(x):
        torch.manual_seed(0)  # the same zoneout masks at every evaluation
        out, state = layer(x, lengths=torch.tensor([5, 3]))
        return out, *state

    assert gradcheck(run, (x,), fast_mode=True)


def _perturb_(layer, gen):
    """Gains and biases away from 1 and 0, so that a gain the kernel forgot shows."""
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


SEQUENTIAL = [*LSTMS, "gru", "gru-v1", "tanh"]


@needs_extension
@pytest.mark.parametrize("cell", SEQUENTIAL)
@pytest.mark.parametrize("training", [True, False])
def test_fused_layer_norm_matches_step_float64(cell, training):
    """Layer norm fused into the kernels (LN(R y), and LN(c) for the LSTMs), with zoneout,
    recurrent dropout, lengths and two bidirectional layers: outputs, states, every gradient."""
    gen = torch.Generator().manual_seed(100 + SEQUENTIAL.index(cell))
    T, B, I, H = 6, 4, 5, 7
    options = {"layer_norm": True, "zoneout": 0.2, "recurrent_dropout": 0.2}
    ref, fast = _pair(cell, I, H, 2, True, torch.float64, **options)
    _perturb_(ref, gen)
    fast.load_state_dict(ref.state_dict())
    ref.train(training)
    fast.train(training)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=gen)
    lengths = torch.tensor([6, 4, 1, 3])
    weights = torch.randn(T, B, 2 * H, dtype=torch.float64, generator=gen)
    for a, b in zip(
        _outputs_and_grads(ref, x, lengths, weights, 5),
        _outputs_and_grads(fast, x, lengths, weights, 5),
        strict=True,
    ):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@needs_extension
@pytest.mark.parametrize("cell", ["lstm-v", "lstm-fgr", "gru", "gru-v1"])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_recurrent_weight_gradients_formed_chunk_by_chunk_match(cell, layer_norm):
    """The GRUs' dR (the LSTMs' with layer norm, FGR's dW_gg) is formed 16 steps at a time at
    B = 40: T = 45 makes three chunks, the last one short; lengths leave padded steps in each."""
    gen = torch.Generator().manual_seed(11)
    T, B, I, H = 45, 40, 3, 5
    ref, fast = _pair(cell, I, H, 1, False, torch.float64, layer_norm=layer_norm,
                      recurrent_dropout=0.2)  # fmt: skip
    _perturb_(ref, gen)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64, generator=gen)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    weights = torch.randn(T, B, H, dtype=torch.float64, generator=gen)
    for a, b in zip(
        _outputs_and_grads(ref, x, lengths, weights, 3),
        _outputs_and_grads(fast, x, lengths, weights, 3),
        strict=True,
    ):
        # Gradients of up to ~1e3 summed over 1,800 rows, and 45 layer-normed steps in the
        # outputs: a small entry's round-off is relative to the largest ones, not to itself
        # (seen: 8e-12 on an output of 1.8e-4, in a tensor whose largest entry is about 1).
        scale = max(1.0, a.abs().max().item())
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10 * scale)


@needs_extension
@pytest.mark.parametrize("cell", ["lstm", "lstm-v", "lstm-fgr", "gru", "gru-v1", "tanh"])
def test_fused_layer_norm_matches_step_float32_and_saves_nothing_without_grad(cell):
    gen = torch.Generator().manual_seed(7)
    ref, fast = _pair(cell, 24, 40, 1, False, torch.float32, layer_norm=True)
    _perturb_(ref, gen)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(30, 9, 24, generator=gen)
    lengths = torch.randint(1, 31, (9,), generator=gen)
    weights = torch.randn(30, 9, 40, generator=gen)
    for a, b in zip(
        _outputs_and_grads(ref, x, lengths, weights, 0),
        _outputs_and_grads(fast, x, lengths, weights, 0),
        strict=True,
    ):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(1.0, a.abs().max().item()))
    with torch.no_grad():
        out, _ = fast(x, lengths=lengths)
    torch.testing.assert_close(out, ref(x, lengths=lengths)[0], rtol=1e-4, atol=1e-5)


@needs_extension
@pytest.mark.parametrize(
    "cell", ["lstm-v", "lstm-cifg", "lstm-noaf", "lstm-fgr", "gru", "gru-v1", "tanh"]
)
def test_gradcheck_through_fused_layer_norm(cell):
    layer = Recurrent(cell, 3, 3, backend="fused", layer_norm=True, zoneout=0.3).double()
    _perturb_(layer, torch.Generator().manual_seed(1))
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *params):
        torch.manual_seed(0)  # the same zoneout masks at every evaluation
        out, state = torch.func.functional_call(
            layer, dict(zip(names, params, strict=True)), (x,), {"lengths": torch.tensor([4, 2])}
        )
        return out, *state

    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_forced_fused_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="fused backend does not apply"):
        Recurrent("mingru", 3, 4, backend="fused", zoneout=0.1)(torch.randn(2, 1, 3))
    with pytest.raises(ConfigError, match="Valid backends"):
        Recurrent("lstm", 3, 4, backend="cuda")


def test_falls_back_to_the_step_loop_without_the_extension():
    code = (
        "import torch, rnnlab\n"
        "a = rnnlab.Recurrent('lstm-v', 3, 4).double()\n"
        "b = rnnlab.Recurrent('lstm-v', 3, 4, backend='step').double()\n"
        "b.load_state_dict(a.state_dict())\n"
        "x = torch.randn(5, 2, 3, dtype=torch.float64)\n"
        "assert torch.equal(a(x)[0], b(x)[0])\n"
        "from rnnlab.kernels import cpu\n"
        "print(cpu.unavailable_reason())\n"
    )
    env = dict(os.environ, RNNLAB_NO_EXTENSION="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "disabled by RNNLAB_NO_EXTENSION" in result.stdout


@needs_extension
@pytest.mark.parametrize(
    "shape", [(32, 256, 1024), (13, 37, 148), (1, 128, 512), (9, 5, 7), (7, 64, 3 * 16 + 5)]
)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_packed_recurrent_product_equals_torch_mm(shape, threads):
    """The time loops' own product (panels of R: 32 columns with AVX-512, 16 with AVX2; torch.mm
    elsewhere and in float64): rows and columns that do not fill a tile included; with 1, 2
    and 3 threads (the panels split among them), panel counts that do not divide among them
    included."""
    M, K, N = shape
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_packed_product(M, K, N)
    finally:
        torch.set_num_threads(previous)


def _check_packed_product(M: int, K: int, N: int) -> None:
    gen = torch.Generator().manual_seed(M * K + N)
    A, W = torch.randn(M, K, generator=gen), torch.randn(N, K, generator=gen)
    expected = A.double() @ W.double().t()
    ext = cpu.extension()
    for out in (ext.packed_product(A, W, True), ext.packed_product(A, W.t().contiguous(), False)):
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5 * K**0.5)
    exact = ext.packed_product(A.double(), W.double(), True)
    torch.testing.assert_close(exact, expected, rtol=1e-12, atol=1e-12)


@needs_extension
def test_a_lock_left_by_a_killed_build_is_cleared_not_waited_on():
    # torch waits forever on its build directory's "lock" file; one left by a process killed
    # while it loaded the extension must not hang every later process.
    lock = build.build_directory() / "lock"
    lock.touch()
    try:
        code = "from rnnlab.kernels import cpu\nassert cpu.extension() is not None\n"
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        assert "left by a process killed" in result.stderr
        assert not lock.exists()
    finally:
        lock.unlink(missing_ok=True)


def test_the_kernel_cache_is_keyed_by_content_not_by_checkout(tmp_path, monkeypatch):
    """Another checkout with the same sources shares the build; a changed header, source or
    version of torch gets its own directory, so no checkout rebuilds another's kernels."""
    import shutil

    key = build.build_key()
    assert build.extension_name().endswith(key) and key in str(build.build_directory())
    copy = tmp_path / "csrc"
    shutil.copytree(build._CSRC, copy)
    monkeypatch.setattr(build, "_CSRC", copy)
    monkeypatch.setattr(build, "_SOURCES", [copy / p.name for p in build._SOURCES])
    assert build.build_key() == key
    header = copy / "safe_math.h"
    original = header.read_bytes()
    header.write_bytes(original + b"// changed\n")
    assert build.build_key() != key
    header.write_bytes(original)
    assert build.build_key() == key
    monkeypatch.setattr(build.torch, "__version__", "0.0.0")
    assert build.build_key() != key


def test_a_build_announces_itself_once(tmp_path, monkeypatch, capsys):
    """A fresh cache: one line before the build, one after with its time; none when cached.
    (torch's compiler is replaced by a stand-in that writes the library: the real build is
    exercised by every fused test.)"""
    from torch.utils import cpp_extension

    built = []

    def fake_load(name, sources, extra_cflags, build_directory, verbose):
        built.append(name)
        (build.Path(build_directory) / f"{name}.so").write_bytes(b"")
        return object()

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("RNNLAB_NO_EXTENSION", raising=False)
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    for attempt in range(2):
        monkeypatch.setattr(build, "_state", {"module": None, "error": None})
        assert cpu.extension() is not None
        lines = [line for line in capsys.readouterr().err.splitlines() if line]
        if attempt == 0:
            assert len(lines) == 2 and "building the fused CPU kernels" in lines[0]
            assert str(tmp_path) in lines[0] and "built the fused CPU kernels in" in lines[1]
        else:
            assert lines == []  # cached: nothing said
    assert built == [build.extension_name()] * 2


@needs_extension
@pytest.mark.parametrize("cell", FUSED)
def test_nan_propagates_through_the_fused_kernels_as_through_the_step_loop(cell):
    """Built with -ffast-math (and the float32 gates' own tanh, csrc/safe_math.h), the kernels
    must still carry a NaN where the step loop does, or training could not stop on it
    (rnnlab.train checks the loss for NaN); evaluation mode (no noise or dropout)."""
    ref, fast = _pair(cell, 3, 4, 1, False, torch.float32)
    ref.eval()
    fast.eval()
    x = torch.randn(5, 2, 3)
    x[2, 0, 1] = float("nan")
    with torch.no_grad():
        want, got = ref(x)[0], fast(x)[0]
    # (A spiking cell's step loop itself turns the NaN into no spike; its kernel must agree.)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=1e-4, atol=1e-4)


@needs_extension
@pytest.mark.parametrize("cell", FUSED)
def test_saturated_gates_stay_finite(cell):
    """Huge pre-activations (a long piece drives an LSTM's cell state far out) must saturate the
    gates as the step loop does, never turn into NaN, forward and backward."""
    ref, fast = _pair(cell, 3, 4, 1, False, torch.float32)
    ref.eval()
    fast.eval()
    x = torch.randn(30, 2, 3) * 1e4
    a, sa = ref(x)
    b, sb = fast(x)
    assert torch.equal(torch.isfinite(b), torch.isfinite(a))
    assert all(
        torch.equal(torch.isfinite(p), torch.isfinite(q)) for p, q in zip(sb, sa, strict=True)
    )
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    b.nan_to_num().sum().backward()
    a.nan_to_num().sum().backward()
    for p, q in zip(fast.parameters(), ref.parameters(), strict=True):
        assert torch.equal(torch.isfinite(p.grad), torch.isfinite(q.grad))


def test_without_a_compiler_one_line_says_the_step_loop_is_used(tmp_path, monkeypatch, capsys):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension: c++: not found\nmany more lines")

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("RNNLAB_NO_EXTENSION", raising=False)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(build, "_state", {"module": None, "error": None})
    assert cpu.extension() is None and cpu.extension() is None  # said once, not per call
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 2 and "could not be built" in lines[1]
    assert lines[1].endswith("the step loop is used") and "c++: not found" in lines[1]
