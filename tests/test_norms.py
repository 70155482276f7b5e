"""The step normalisations (recurrent batch norm, BLN, ATN) and quantised training
(rnnlab.cells.norms): against independent float64 transcriptions of their papers' equations, their
population statistics, padding, gradients, and the refusals."""

import math

import pytest
import torch
from cell_traits import probe, takes
from torch.autograd import gradcheck

from rnnlab import Recurrent
from rnnlab.cells import cell_names
from rnnlab.cells.norms import STEP_NORMS
from rnnlab.errors import ConfigError

NORM_CELLS = [c for c in cell_names() if takes(c, "norm")]
QUANT_CELLS = [c for c in cell_names() if takes(c, "quant_bits")]


# --- an independent transcription: the plain LSTM (i, f, z, o) with a normalisation -------------
def _norm_ref(kind, a, past, valid, gain, shift, batch_rows=None):
    """One site's normalised value, written from the papers' definitions, row by row.
    a (B, d); past: per row, the list of this site's earlier values (most recent last)."""
    B, d = a.shape
    out = torch.empty_like(a)
    rows = [r for r in range(B) if valid[r]]
    if kind in ("batch", "batch-layer"):
        eps = 1e-5 if kind == "batch" else 1e-3
        sel = a[rows]
        mu = sel.mean(0)
        var = ((sel - mu) ** 2).mean(0)
        xb = (a - mu) / torch.sqrt(var + eps)
        if kind == "batch":
            out = xb
        else:
            n = len(rows)
            xf = torch.stack([(a[r] - a[r].mean()) / torch.sqrt(a[r].var(unbiased=False) + eps)
                              for r in range(B)])  # fmt: skip
            out = ((1 / n - 1e-4) * xf + (1 - 1 / n - 1e-4) * xb) / math.sqrt(d)
    else:
        for r in range(B):
            window = torch.stack([a[r], *past[r]])  # this step and the kept earlier ones
            mu = window.mean()
            var = ((window - mu) ** 2).mean()
            out[r] = (a[r] - mu) / torch.sqrt(var + 1e-5)
    out = out * gain
    return out if shift is None else out + shift


def _lstm_ref(x, lengths, p, kind, k):
    """The plain LSTM with normalised W x, R h and c: a_t = N(W x) + N(R h) + b,
    c_t = f c + i z, h_t = o tanh(N_c(c_t)); padded steps keep the state."""
    T, B, _ = x.shape
    H = p["weight_hh"].shape[1]
    h = x.new_zeros(B, H)
    c = x.new_zeros(B, H)
    history = {s: [[] for _ in range(B)] for s in ("ih", "hh", "c")}
    outs = []
    for t in range(T):
        valid = [t < int(lengths[r]) for r in range(B)]

        def norm(site, a, valid=valid):
            past = [list(reversed(history[site][r][-(k - 1):])) if k > 1 else []
                    for r in range(B)]  # fmt: skip
            value = _norm_ref(kind, a, past, valid, p[f"gain_{site}"], p.get(f"shift_{site}"))
            for r in range(B):
                if valid[r]:
                    history[site][r].append(a[r])
            return value

        pre = norm("ih", x[t] @ p["weight_ih"].t()) + norm("hh", h @ p["weight_hh"].t())
        i, f, z, o = (pre + p["bias"]).chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
        h_new = torch.sigmoid(o) * torch.tanh(norm("c", c_new))
        v = torch.tensor(valid)[:, None]
        h, c = torch.where(v, h_new, h), torch.where(v, c_new, c)
        outs.append(torch.where(v, h_new, 0.0))
    return torch.stack(outs), h, c


@pytest.mark.parametrize("kind", STEP_NORMS)
def test_lstm_with_each_step_normalisation_matches_a_transcription(kind):
    torch.manual_seed(0)
    k = 3
    layer = Recurrent("lstm", 3, 4, norm=kind, norm_window=k).double()
    cell = layer.cells[0]
    with torch.no_grad():  # gains and shifts away from their initial values
        for _, value in cell.step_norms.named_parameters():
            value.copy_(0.5 + torch.rand_like(value))
    p = {n: v.detach() for n, v in cell.named_parameters()}
    p.update({n.split(".")[-1]: v.detach() for n, v in cell.step_norms.named_parameters()})
    x = torch.randn(6, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 4, 6, 2, 5])
    want, h, c = _lstm_ref(x, lengths, p, kind, k)
    got, state = layer(x, lengths)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state[0][0], h, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state[1][0], c, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state[2][0, :, 0], lengths.double())  # the clock


@pytest.mark.parametrize("cell", [c for c in NORM_CELLS if takes(c, "layer_norm")])
def test_assorted_time_over_one_step_is_layer_norm(cell):
    """ATN with a window of one step normalises with the row's own statistics: layer norm."""
    torch.manual_seed(0)
    ln = Recurrent(cell, 3, 4, num_layers=2, layer_norm=True).double()
    torch.manual_seed(0)
    atn = Recurrent(cell, 3, 4, num_layers=2, norm="assorted-time", norm_window=1).double()
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 5])
    want, _ = ln(x, lengths)
    got, _ = atn(x, lengths)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_batch_norm_keeps_statistics_per_time_step_and_evaluates_with_them():
    torch.manual_seed(0)
    layer = Recurrent("tanh", 2, 3, norm="batch", norm_steps=4).double()
    norms = layer.cells[0].step_norms
    for _ in range(3):
        layer(torch.randn(3, 8, 2, dtype=torch.float64) * 3 + 1)  # T = 3: steps 0, 1, 2 seen
    assert norms.seen.tolist() == [3, 3, 3, 0]
    # Step 0's input statistics after three batches of momentum 0.1, moving away from 0 and 1.
    assert not torch.allclose(norms.mean_ih[0], torch.zeros(3, dtype=torch.float64))
    assert torch.all(norms.mean_ih[3] == 0) and torch.all(norms.var_ih[3] == 1)
    layer.eval()
    x = torch.randn(5, 2, 2, dtype=torch.float64)
    got, _ = layer(x)
    # By hand: step t uses the statistics of step min(t, 2) (3 and 4 were never seen).
    cell = layer.cells[0]
    h = torch.zeros(2, 3, dtype=torch.float64)
    for t in range(5):
        s = min(t, 2)
        a = (x[t] @ cell.weight_ih.t() - norms.mean_ih[s]) / torch.sqrt(norms.var_ih[s] + 1e-5)
        r = (h @ cell.weight_hh.t() - norms.mean_hh[s]) / torch.sqrt(norms.var_hh[s] + 1e-5)
        h = torch.tanh(a * norms.gain_ih + r * norms.gain_hh + cell.bias)
        torch.testing.assert_close(got[t], h, rtol=1e-10, atol=1e-10)


def test_batch_statistics_ignore_padded_rows():
    """A row past its length changes neither the others' statistics nor their outputs."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 2, 3, norm="batch").double()
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    short, _ = layer(x[:, :2], torch.tensor([4, 4]))
    noisy = x.clone()
    noisy[:, 2] = 1e3  # the third row has no step; its padding is wild
    full, _ = layer(noisy, torch.tensor([4, 4, 0]))
    torch.testing.assert_close(full[:, :2], short, rtol=1e-10, atol=1e-10)


def _one_per_class(cells):
    """The first cell of each cell class (the LSTM variants share one): its code paths."""
    seen, kept = set(), []
    for c in cells:
        if type(probe(c)) not in seen:
            seen.add(type(probe(c)))
            kept.append(c)
    return kept


# Finite differences check exact gradients, drawn without noise.
GRADCHECKED = _one_per_class(
    [c for c in NORM_CELLS if probe(c).exact_gradient and not probe(c).noisy_in_training]
)


@pytest.mark.parametrize("kind", STEP_NORMS)
@pytest.mark.parametrize("cell", GRADCHECKED)
def test_gradcheck_with_step_normalisations(cell, kind):
    torch.manual_seed(0)
    layer = Recurrent(cell, 3, 3, norm=kind, norm_window=2).double()
    x = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2, 3, 1])
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        params = dict(zip(names, ps, strict=True))
        out, state = torch.func.functional_call(layer, params, (x,), {"lengths": lengths})
        clock = layer.cells[0].core_parts  # the step count has no gradient
        return out, *[part for k, part in enumerate(state) if k != clock]

    inputs = (x, *[p.detach().clone().requires_grad_() for p in layer.parameters()])
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("kind", STEP_NORMS)
def test_compiled_fullgraph_matches_eager_in_evaluation(kind):
    torch.manual_seed(0)
    layer = Recurrent("lstm-v", 3, 4, norm=kind).double()
    layer(torch.randn(5, 6, 3, dtype=torch.float64))  # some statistics
    layer.eval()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    want, _ = layer(x)
    got, _ = compiled(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", STEP_NORMS)
@pytest.mark.parametrize("cell", NORM_CELLS)
def test_every_normalised_cell_normalises_its_input_product(cell, kind):
    """W x is a normalised site of every cell that takes a step normalisation: the outputs do
    not change when W is scaled (batch, batch-layer and assorted-time statistics are all scale
    invariant, up to their eps), where without the normalisation they do."""

    def outputs(norm, scale):
        torch.manual_seed(0)
        # The spiking cells' own input batch norm (the authors') is off in the plain run.
        own = (
            {"batch_norm": False}
            if norm == "none" and "batch_norm" in probe(cell).arguments
            else {}
        )
        layer = Recurrent(cell, 3, 4, norm=norm, norm_window=3, cell_args=own).double().train()
        with torch.no_grad():
            for c in layer.cells:
                c.weight_ih.mul_(scale)
        torch.manual_seed(1)  # the same training noise (GateL0RD's gate) in both calls
        # Large inputs: the statistics' eps (up to 1e-3) small beside the variance at each step
        x = torch.randn(6, 5, 3, dtype=torch.float64) * 100
        out, state = layer(x, torch.tensor([6, 4, 6, 2, 5]))
        # The cell's own state too: spikes and events may hide a change that the potentials
        # show (not the normalisation's parts: ATN's window keeps raw values).
        own_parts = getattr(layer.cells[0], "core_parts", len(state))
        return torch.cat([out.flatten(), *[part.flatten() for part in state[:own_parts]]])

    torch.testing.assert_close(outputs(kind, 3.0), outputs(kind, 1.0), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(outputs("none", 3.0), outputs("none", 1.0), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("cell", [c for c in NORM_CELLS if probe(c).norm_replaces])
def test_a_norm_replaces_the_cells_own_normalisation_and_both_are_refused(cell):
    """The spiking cells' input batch norm (a cell argument, on by default) gives way to a
    step normalisation at the same site; asking for both is one clear error."""
    own = probe(cell).norm_replaces
    layer = Recurrent(cell, 3, 4, norm="batch")
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in layer.modules())
    with pytest.raises(ConfigError, match=f"norm=batch takes the place of its cell argument {own}"):
        Recurrent(cell, 3, 4, norm="batch", cell_args={own: True})
    Recurrent(cell, 3, 4, norm="batch", cell_args={own: False})


@pytest.mark.parametrize("cell", [c for c in cell_names() if not takes(c, "quant_bits")])
def test_cells_without_quantised_training_say_why(cell):
    with pytest.raises(ConfigError, match=f"cell '{cell}': it does not take quant_bits: .+"):
        Recurrent(cell, 3, 4, quant_bits=4)


# --- quantised training ------------------------------------------------------------------------
@pytest.mark.parametrize("cell", QUANT_CELLS)
def test_every_quantised_cell_computes_on_its_grids(cell):
    """Every weight matrix the forward pass reads is on its grid, and so is every output."""
    torch.manual_seed(0)
    bits = 8  # fine enough that small outputs (the SR-GRU's centroids) are not all 0
    levels = 2 ** (bits - 1) - 1
    layer = Recurrent(cell, 4, 6, num_layers=2, quant_bits=bits)
    for c in layer.cells:
        names = [n for n, _ in c.named_parameters() if n.startswith("parametrizations.weight_")]
        assert names, "no weight matrix was quantised"
        for name in names:
            w = getattr(c, name.split(".")[1])
            scale = getattr(c.parametrizations, name.split(".")[1]).original.abs().max()
            assert torch.allclose(w / scale * levels, torch.round(w / scale * levels), atol=1e-5)
    # A drive held over 30 steps: long and steady enough for the spiking units to fire
    x = (torch.randn(1, 8, 4) * 5).expand(30, 8, 4) + 0.1 * torch.randn(30, 8, 4)
    out, _ = layer(x)
    grid = out * levels
    assert torch.allclose(grid, torch.round(grid), atol=1e-5) and out.abs().max() <= 1
    assert len(out.unique()) > 1  # not a constant output


def test_quantised_weights_and_outputs_lie_on_their_grids():
    torch.manual_seed(0)
    bits = 3
    layer = Recurrent("gru", 4, 6, quant_bits=bits)
    cell = layer.cells[0]
    w = cell.weight_hh  # the quantised matrix the forward pass uses
    raw = cell.parametrizations.weight_hh.original
    levels = 2 ** (bits - 1) - 1
    scale = raw.abs().max()
    assert torch.allclose(w / scale * levels, torch.round(w / scale * levels), atol=1e-5)
    assert not torch.equal(w, raw)
    out, _ = layer(torch.randn(5, 2, 4) * 3)
    grid = out * levels
    assert torch.allclose(grid, torch.round(grid), atol=1e-5) and out.abs().max() <= 1


def test_quantised_gradients_pass_straight_through():
    """d loss / d w (the float weight) is the gradient at the quantised weight; outputs clipped
    at +-1 pass none."""
    torch.manual_seed(0)
    layer = Recurrent("tanh", 2, 3, quant_bits=4).double()
    cell = layer.cells[0]
    x = torch.randn(3, 2, 2, dtype=torch.float64)
    out, _ = layer(x)
    out.sum().backward()
    grad = cell.parametrizations.weight_ih.original.grad.clone()

    # The same function written with the quantised weights as plain tensors and a
    # straight-through output rounding: the gradient with respect to those weights.
    w_ih = cell.weight_ih.detach().clone().requires_grad_()
    w_hh = cell.weight_hh.detach().clone()
    h = torch.zeros(2, 3, dtype=torch.float64)
    total = 0.0
    for t in range(3):
        y = torch.tanh(x[t] @ w_ih.t() + h @ w_hh.t() + cell.bias.detach())
        h = y + (torch.round(y * 7) / 7 - y).detach()
        total = total + h.sum()
    total.backward()
    torch.testing.assert_close(grad, w_ih.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bits", [1, 17, -2])
def test_quant_bits_out_of_range_are_refused(bits):
    with pytest.raises(ConfigError, match="quant_bits must be 0 .off. or 2 to 16"):
        Recurrent("lstm", 3, 4, quant_bits=bits)


# --- refusals ----------------------------------------------------------------------------------
def test_a_wrong_norm_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="batch-layer"):
        Recurrent("lstm", 3, 4, norm="batchnorm")


def test_two_normalisations_at_once_are_refused():
    with pytest.raises(ConfigError, match="choose one normalisation"):
        Recurrent("lstm", 3, 4, layer_norm=True, norm="batch")


def test_norm_layer_is_layer_norm():
    assert Recurrent("gru", 3, 4, norm="layer").config.layer_norm


@pytest.mark.parametrize("cell", [c for c in cell_names() if not takes(c, "norm")])
def test_cells_without_step_normalisation_refuse_it_by_name(cell):
    with pytest.raises(ConfigError, match=f"cell '{cell}'.*norm"):
        Recurrent(cell, 3, 4, norm="batch")


def test_onnx_export_refuses_quantised_layers():
    layer = Recurrent("gru", 3, 4, quant_bits=4).eval()
    with pytest.raises(Exception, match="quantised"):  # the exporter wraps the ConfigError
        torch.onnx.export(layer, (torch.randn(5, 2, 3),), dynamo=True)


def test_onnx_export_of_batch_norm_is_right_and_of_the_others_refused(tmp_path):
    import onnxruntime

    for kind in STEP_NORMS:
        torch.manual_seed(0)
        layer = Recurrent("lstm", 3, 4, norm=kind)
        layer(torch.randn(6, 8, 3))  # population statistics of steps 0 to 5
        layer.eval()
        dims = ({0: torch.export.Dim("T"), 1: torch.export.Dim("B")},)
        if kind != "batch":
            with pytest.raises(Exception, match=f"ONNX export of norm='{kind}' is not supported"):
                torch.onnx.export(layer, (torch.randn(5, 3, 3),), dynamo=True, dynamic_shapes=dims)
            continue
        program = torch.onnx.export(layer, (torch.randn(5, 3, 3),), dynamo=True,
                                    dynamic_shapes=dims)  # fmt: skip
        program.save(tmp_path / "layer.onnx")
        session = onnxruntime.InferenceSession(tmp_path / "layer.onnx")
        x = torch.randn(9, 4, 3)  # longer than trained: steps 6 to 8 use step 5's statistics
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = layer(x)[0].numpy()
        assert abs(got - want).max() < 1e-5


@pytest.mark.parametrize(
    "cell", _one_per_class([c for c in NORM_CELLS if probe(c).onnx_refusal is None])
)
def test_onnx_export_of_every_batch_normalised_cell_is_right(cell, tmp_path):
    """In evaluation, each cell class with recurrent batch norm exports to a graph that
    computes the layer on a new length and batch (steps past the trained ones included)."""
    import onnxruntime

    torch.manual_seed(0)
    layer = Recurrent(cell, 3, 4, norm="batch")
    layer(torch.randn(6, 8, 3) * 2)
    layer.eval()
    dims = ({0: torch.export.Dim("T"), 1: torch.export.Dim("B")},)
    program = torch.onnx.export(layer, (torch.randn(5, 3, 3),), dynamo=True, dynamic_shapes=dims)
    program.save(tmp_path / "layer.onnx")
    session = onnxruntime.InferenceSession(tmp_path / "layer.onnx")
    x = torch.randn(9, 4, 3) * 2
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        out, state = layer(x)
    want = [out, *state]  # the state too: EGRU's outputs may be all zeros (no events)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert abs(g - w.numpy()).max() < 1e-5
    assert any(abs(w).max() > 0 for w in want)


def test_the_normalised_cells_run_the_step_loop_and_say_so_on_the_fused_backend():
    layer = Recurrent("lstm", 3, 4, norm="batch", backend="fused")
    with pytest.raises(ConfigError, match="norm=batch"):
        layer(torch.randn(5, 2, 3))


def test_traits_agree():
    assert all(probe(c).refusal("quant_bits") is None for c in QUANT_CELLS)


@pytest.mark.parametrize("kind", STEP_NORMS)
def test_chunks_continue_each_steps_statistics(kind):
    """Fed in chunks with the returned state, a trained layer uses the statistics of each step's
    own place in the sequence (the clock travels in the state) and the window's earlier values."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 3, 4, norm=kind, norm_steps=16).double()
    for _ in range(2):
        scale = torch.linspace(0.2, 3, 11, dtype=torch.float64)[:, None, None]
        layer(torch.randn(11, 6, 3, dtype=torch.float64) * scale)
    layer.eval()
    x = torch.randn(11, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        want, _ = layer(x)
        state, outs = None, []
        for chunk in x.split([4, 1, 6]):
            out, state = layer(chunk, state=state)
            outs.append(out)
        restarted, _ = layer(x[4:])
    torch.testing.assert_close(torch.cat(outs), want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(restarted, want[4:])  # without the state, step 4 is step 0 again


def test_a_state_without_the_normalisation_parts_is_refused_saying_why():
    layer = Recurrent("lstm", 3, 4, norm="assorted-time")
    with pytest.raises(ValueError, match="adds parts after the cell's own: a clock and the window"):
        layer(torch.randn(5, 2, 3), state=(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
