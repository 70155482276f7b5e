"""Shapes, lengths, padding invariance and the layer options, for every registered cell."""

import pytest
import torch
from cell_traits import probe, takes, usable

import rnnlab
from rnnlab import Recurrent
from rnnlab.errors import ConfigError
from rnnlab.recurrent import reverse_padded

CELLS = rnnlab.cell_names()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_shapes(cell, bidirectional, batch_first):
    T, B, I, H, L = 5, 3, 4, 6, 2
    options = usable(cell, layer_norm=True, recurrent_dropout=0.2, zoneout=0.1)
    layer = Recurrent(
        cell, I, H, L, bidirectional=bidirectional, batch_first=batch_first, dropout=0.1, **options
    )
    D = 2 if bidirectional else 1
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    out, state = layer(x, lengths=torch.tensor([5, 2, 1]))
    assert out.shape == ((B, T, D * H) if batch_first else (T, B, D * H))
    assert len(state) == len(probe(cell).state_widths)
    assert state[0].shape == (L * D, B, H)
    # Padded steps give zero outputs.
    padded = out[1, 2:] if batch_first else out[2:, 1]
    assert torch.all(padded == 0)
    out.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("options", [{}, {"layer_norm": True, "zoneout": 0.3}])
def test_padding_never_changes_results(cell, options):
    """A padded batch gives each sequence exactly what it gets alone (outputs and final states)."""
    torch.manual_seed(1)
    layer = Recurrent(cell, 3, 4, 2, bidirectional=True, **usable(cell, **options)).double().eval()
    lengths = [6, 3, 1]
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    x_padded = x.clone()
    for b, n in enumerate(lengths):
        x_padded[n:, b] = 1e3  # garbage in the padding must not leak
    out, state = layer(x_padded, lengths=torch.tensor(lengths))
    for b, n in enumerate(lengths):
        alone, alone_state = layer(x[:n, b : b + 1])
        torch.testing.assert_close(out[:n, b : b + 1], alone, rtol=1e-12, atol=1e-12)
        assert torch.all(out[n:, b] == 0)
        for part, alone_part in zip(state, alone_state, strict=True):
            torch.testing.assert_close(part[:, b : b + 1], alone_part, rtol=1e-12, atol=1e-12)


def test_reverse_padded():
    x = torch.arange(8.0).view(4, 2, 1)  # (T=4, B=2)
    r = reverse_padded(x, torch.tensor([4, 2]))
    assert r[:, 0, 0].tolist() == [6.0, 4.0, 2.0, 0.0]
    assert r[:, 1, 0].tolist() == [3.0, 1.0, 5.0, 7.0]  # padding stays where it was


def test_initial_state_is_used_and_checked():
    layer = Recurrent("lstm", 3, 4, 2)
    x = torch.randn(5, 2, 3)
    h0 = (torch.randn(2, 2, 4), torch.randn(2, 2, 4))
    out_a, _ = layer(x, state=h0)
    out_b, _ = layer(x)
    assert not torch.allclose(out_a, out_b)
    with pytest.raises(ValueError, match="expected"):
        layer(x, state=(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match="state part"):
        layer(x, state=(torch.zeros(2, 2, 4),))


def test_state_continues_a_sequence():
    """Running two halves with the state carried equals running the whole."""
    layer = Recurrent("lstm-fgr", 3, 4, 2).double()
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    whole, s_whole = layer(x)
    first, s = layer(x[:5])
    second, s2 = layer(x[5:], state=s)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    for a, b in zip(s2, s_whole, strict=True):
        torch.testing.assert_close(a, b)


def test_bad_input_width_and_lengths():
    layer = Recurrent("gru", 3, 4)
    with pytest.raises(ValueError, match="input width 5 does not match input_size=3"):
        layer(torch.randn(2, 2, 5))
    with pytest.raises(ValueError, match="3-d"):
        layer(torch.randn(2, 3))
    with pytest.raises(ValueError, match="no time steps"):
        layer(torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 2\]"):
        layer(torch.randn(2, 2, 3), lengths=torch.tensor([3, 1]))


def test_unknown_cell_lists_valid_ones():
    with pytest.raises(
        ValueError, match="Did you mean .lstm-cifg.*Valid cells: .*gru, gru-v1, lstm"
    ):
        Recurrent("lstm-cfg", 3, 4)


def test_scan_cells_refuse_recurrent_dropout():
    with pytest.raises(ValueError, match="no recurrent weights"):
        Recurrent("mingru", 3, 4, recurrent_dropout=0.1)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("option", ["layer_norm", "zoneout", "recurrent_dropout", "norm",
                                    "quant_bits"])  # fmt: skip
def test_an_option_a_cell_does_not_take_is_refused_by_name(cell, option):
    value = {"layer_norm": True, "zoneout": 0.2, "recurrent_dropout": 0.2, "norm": "batch",
             "quant_bits": 4}[option]  # fmt: skip
    if takes(cell, option):
        Recurrent(cell, 3, 4, **{option: value})
    else:
        with pytest.raises(ConfigError, match=f"cell '{cell}'.*{option}"):
            Recurrent(cell, 3, 4, **{option: value})


def test_forget_bias_init():
    layer = Recurrent("lstm-v", 3, 4, forget_bias=2.5)
    bias = layer.cells[0].bias
    assert torch.all(bias[4:8] == 2.5) and torch.all(bias[:4] == 0) and torch.all(bias[8:] == 0)
    nfg = Recurrent("lstm-nfg", 3, 4, forget_bias=2.5).cells[0].bias
    assert torch.all(nfg == 0)  # no forget gate: no forget bias


def test_dropout_between_layers_only_in_training():
    layer = Recurrent("gru", 3, 8, 2, dropout=0.5)
    x = torch.randn(4, 2, 3)
    layer.eval()
    a, _ = layer(x)
    b, _ = layer(x)
    torch.testing.assert_close(a, b)
    layer.train()
    c, _ = layer(x)
    assert not torch.allclose(a, c)


def test_recurrent_dropout_one_mask_per_sequence():
    """Gal & Ghahramani: the same mask at every step of a sequence, a new one for the next call."""
    layer = Recurrent("tanh", 3, 8, recurrent_dropout=0.5, backend="step")
    masks = []
    original = layer.cells[0].step

    def spy(x_proj, state, mask):
        masks.append(mask)
        return original(x_proj, state, mask)

    layer.cells[0].step = spy
    layer(torch.randn(5, 4, 3))
    assert len(masks) == 5 and all(m is masks[0] for m in masks)
    assert set(masks[0].unique().tolist()) <= {0.0, 2.0}  # inverted dropout, keep = 0.5
    layer(torch.randn(5, 4, 3))
    assert not torch.equal(masks[5], masks[0])
    masks.clear()
    layer.eval()
    layer(torch.randn(5, 4, 3))
    assert all(m is None for m in masks)


def test_zoneout_in_evaluation_uses_the_expectation():
    """Krueger et al.: at test time h_t = p h_{t-1} + (1 - p) h_new."""
    p = 0.3
    layer = Recurrent("lstm", 3, 4, zoneout=p).double().eval()
    plain = Recurrent("lstm", 3, 4).double().eval()
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, _ = layer(x)
    y = c = torch.zeros(2, 4, dtype=torch.float64)
    expected = []
    for t in range(6):
        _, (y_new, c_new) = plain(x[t : t + 1], state=(y[None], c[None]))
        y = p * y + (1 - p) * y_new[0]
        c = p * c + (1 - p) * c_new[0]
        expected.append(y)
    torch.testing.assert_close(out, torch.stack(expected))


def test_zoneout_in_training_keeps_or_updates_each_unit():
    torch.manual_seed(3)
    layer = Recurrent("gru", 3, 64, zoneout=0.5).double()
    x = torch.randn(2, 1, 3, dtype=torch.float64)
    out, _ = layer(x)
    # The first step starts from zero: a kept unit is exactly zero.
    kept = (out[0] == 0).double().mean().item()
    assert 0.3 < kept < 0.7


@pytest.mark.parametrize("cell", CELLS)
def test_nan_in_padding_changes_nothing_not_even_gradients(cell):
    torch.manual_seed(0)
    layer = Recurrent(cell, 3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 2])
    results = []
    for fill in (0.0, float("nan")):
        padded = x.clone()
        padded[1, 2:] = fill
        layer.zero_grad()
        torch.manual_seed(1)  # the same noise for cells that draw some in training
        out, state = layer(padded, lengths=lengths)
        (out.sum() + sum(s.sum() for s in state)).backward()
        grads = [p.grad.clone() for p in layer.parameters()]
        assert all(torch.isfinite(g).all() for g in grads), cell
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_checking_options_draws_no_random_numbers(cell):
    """A seeded stack's weights are its cells' first draws: reading a cell's traits (what it
    takes, its arguments) happens on a probe made with the generator saved and restored."""
    from rnnlab.cells import CellOptions, make_cell

    torch.manual_seed(3)
    layer = Recurrent(cell, 3, 4)
    torch.manual_seed(3)
    alone = make_cell(cell, 3, 4, CellOptions())
    for a, b in zip(layer.cells[0].parameters(), alone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_statistics_are_collected_over_passes_weighted_by_valid_steps():
    from rnnlab.recurrent import collecting_statistics, model_penalty

    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"a": Recurrent("egru", 3, 5), "b": Recurrent("gru", 3, 5)})
    seen = []
    with collecting_statistics(model) as stats:
        for T, lengths in ((4, [4, 1]), (7, [7, 7])):
            model["a"](torch.randn(T, 2, 3), torch.tensor(lengths))
            seen.append((model["a"].statistics()["activity"], sum(lengths) * 5))
    expected = sum(v * n for v, n in seen) / sum(n for _, n in seen)
    assert stats == {"activity": pytest.approx(expected)}
    assert model_penalty(model) is None  # EGRU reports, and adds no term to the loss
    gate = Recurrent("gatel0rd", 3, 5, num_layers=2, cell_args={"l0_lambda": 0.5})
    gate(torch.randn(4, 2, 3))
    openings = gate.statistics()["gate_openings"]
    assert float(model_penalty(gate)) == pytest.approx(0.5 * openings)


def test_a_cells_penalty_reaches_the_training_loss(tmp_path):
    """GateL0RD's L0 term joins the loss the optimiser minimises (not the reported score), and
    the gate-opening rate is logged for the validation and test sets."""
    import json

    from rnnlab.cli import main

    runs = {}
    for lam in ("0", "5"):
        out = tmp_path / lam
        argv = ["train", "--model", "task", "--data", "adding", "--seq-len", "8", "--cell",
                "gatel0rd", "--hidden-size", "8", "--epochs", "3", "--cell-args",
                f"l0_lambda={lam}", "--out", str(out), "--no-progress"]  # fmt: skip
        assert main(argv) == 0
        runs[lam] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"valid_gate_openings", "test_gate_openings"} <= set(runs["0"][0])
    # A heavy penalty shuts the gates: far fewer latent changes than without it.
    assert runs["5"][-1]["valid_gate_openings"] < 0.5 * runs["0"][-1]["valid_gate_openings"]


@pytest.mark.parametrize(
    "args,words",
    [([("thr_mean", 0.2)], "cell_args must be a dict"), ({"thr_mean": "x"}, "must be float"),
     ({"support": float("nan")}, "must be finite"), ({"thr_men": 0.2}, "did you mean 'thr_mean'")],
)  # fmt: skip
def test_cell_arguments_of_the_wrong_kind_are_refused_by_name(args, words):
    with pytest.raises(ConfigError, match=words):
        Recurrent("egru", 3, 4, cell_args=args)
