"""The GCNN (Dauphin et al. 2017) as a music family: causality, the receptive field, the NLL
against the Bernoulli log-likelihood written out from the logits, sampling (over the receptive
field, seeded), learning, the command line (train, eval, sample, compare) and the refusals."""

import json

import pytest
import torch

from rnnlab.cli import main
from rnnlab.models.conv_lm import GatedBlock
from rnnlab.models.gcnn import GCNNConfig, GCNNPredictor
from rnnlab.models.tcn import TCNPredictor


def _model(layers=3, kernel=3, hidden=16, bottleneck=False, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    config = GCNNConfig(hidden_size=hidden, num_layers=layers, kernel_size=kernel, dropout=0.0,
                        bottleneck=bottleneck)  # fmt: skip
    return GCNNPredictor(config).to(dtype).eval()


def _rolls(batch, frames, seed=1, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, frames, 88, generator=generator) < 0.1).to(dtype)


def _logits(model, x):
    """The logits that predict each frame of x (B, T, D): from x_{t-1}, zeros before x_0."""
    shifted = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
    return model.head.logits(model.features(shifted))


def test_the_blocks_are_the_gcnn_language_models_and_sampling_the_tcns():
    model = _model()
    assert all(isinstance(block, GatedBlock) for block in model.blocks)
    assert GCNNPredictor.sample is TCNPredictor.sample  # one sampling loop, shared
    assert GCNNPredictor.forward is TCNPredictor.forward


@pytest.mark.parametrize("bottleneck", [False, True])
@pytest.mark.parametrize("t", [0, 1, 6, 19])
def test_changing_frame_t_changes_no_prediction_of_frames_up_to_t(t, bottleneck):
    model, x = _model(bottleneck=bottleneck), _rolls(2, 20)
    changed = x.clone()
    changed[:, t] = 1.0 - changed[:, t]
    before, after = _logits(model, x), _logits(model, changed)
    torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], rtol=0, atol=0)
    if t + 1 < x.shape[1]:  # not vacuous: frame t predicts frame t + 1
        assert not torch.equal(after[:, t + 1], before[:, t + 1])
    # the log-probabilities of the frames before t too (frame t's is its target, so it moves)
    lengths = torch.tensor([20, 20])
    lp, lp_changed = model(x, lengths).log_prob, model(changed, lengths).log_prob
    torch.testing.assert_close(lp_changed[:, :t], lp[:, :t], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("layers", "kernel", "bottleneck", "expected"),
    [(1, 2, False, 3), (2, 3, False, 9), (4, 4, False, 25), (3, 3, True, 7), (4, 4, True, 13)],
)
def test_the_receptive_field_is_what_the_gradient_reaches(layers, kernel, bottleneck, expected):
    """d h_T / d inputs is nonzero on exactly the last 1 + 2 (k-1) L frames (1 + (k-1) L with
    bottleneck blocks, whose 1x1 GLUs reach nothing back)."""
    model = _model(layers, kernel, hidden=16, bottleneck=bottleneck)
    R = model.receptive_field
    assert R == expected == 1 + (1 if bottleneck else 2) * (kernel - 1) * layers
    T = R + 8
    inputs = torch.randn(1, T, 88, dtype=torch.float64, requires_grad=True)
    model.features(inputs)[0, -1].sum().backward()
    reached = inputs.grad[0].abs().sum(-1) > 0  # (T,)
    assert reached[T - R :].all() and not reached[: T - R].any()


def test_the_defaults_see_25_frames():
    assert GCNNPredictor(GCNNConfig()).receptive_field == 25


def test_the_nll_is_the_bernoulli_log_likelihood_of_the_logits_with_padding():
    model, x = _model(), _rolls(3, 7)
    lengths = torch.tensor([7, 4, 1])
    padded = x.clone()
    padded[1, 4:], padded[2, 1:] = 1.0, 1.0  # garbage after the ends
    out = model(padded, lengths)
    p = torch.sigmoid(_logits(model, padded)).detach()  # (B, T, D)
    expected_total, expected = 0.0, torch.zeros(3, 7, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            xs, ps = padded[b, t], p[b, t]
            expected[b, t] = (xs * torch.log(ps) + (1 - xs) * torch.log(1 - ps)).sum()
            expected_total += float(expected[b, t])
    torch.testing.assert_close(out.log_prob, expected, rtol=0, atol=1e-10)
    assert out.num_frames == 12
    assert float(out.nll_per_frame.detach()) == pytest.approx(-expected_total / 12, abs=1e-10)
    # the short pieces are scored as if alone: padding never reaches a real frame
    alone = model(x[1:2, :4], torch.tensor([4]))
    torch.testing.assert_close(out.log_prob[1, :4], alone.log_prob[0], rtol=0, atol=1e-12)


def test_sampling_over_the_receptive_field_equals_the_whole_history():
    model = _model(layers=2, kernel=3)
    R, T = model.receptive_field, 30
    inputs = torch.cat([torch.zeros(1, 1, 88, dtype=torch.float64), _rolls(1, T - 1)], dim=1)
    whole = model.features(inputs)
    for t in (2, R - 1, R, T - 1):
        window = model.features(inputs[:, max(0, t + 1 - R) : t + 1])[:, -1]
        torch.testing.assert_close(window, whole[:, t], rtol=0, atol=1e-12)


def test_samples_are_seeded_frames_of_keys():
    model = _model(dtype=torch.float32)
    model.train()  # sampling turns dropout off and gives the mode back
    draw = lambda seed: model.sample(11, 3, torch.Generator().manual_seed(seed))  # noqa: E731
    a = draw(3)
    assert a.shape == (3, 11, 88) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, draw(3)) and not torch.equal(a, draw(4))
    assert model.training


def test_it_learns_a_two_frame_pattern():
    """Alternating chords: the NLL per frame falls well below its start (the net predicts)."""
    model = _model(layers=2, kernel=2, dtype=torch.float32)
    x = torch.zeros(4, 20, 88)
    x[:, 0::2, [40, 44, 47]] = 1.0
    x[:, 1::2, [45, 49, 52]] = 1.0
    lengths = torch.full((4,), 20)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    start = float(model(x, lengths).nll_per_frame.detach())
    for _ in range(60):
        optimizer.zero_grad()
        loss = model(x, lengths).nll_per_frame
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.1 * start and float(loss.detach()) < 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cell", "lstm"], "--cell is not an option of the gcnn model"),
        (["--layer-norm"], "--layer-norm is not an option of the gcnn model"),
        (["--zoneout", "0.1"], "--zoneout is not an option of the gcnn model"),
        (["--backend", "fused"], "--backend is not an option of the gcnn model"),
        (["--window", "8"], "--window is not an option of the gcnn model"),
        (["--kernel-size", "1"], "kernel_size must be at least 2, got 1"),
        (["--num-layers", "0"], "num_layers must be positive, got 0"),
        (["--bottleneck", "--hidden-size", "3"], "bottleneck blocks need at least 4 channels"),
        (["--data", "adding"], "--model gcnn cannot train on --data 'adding'"),
    ],
)
def test_what_a_gcnn_cannot_honour_is_refused_in_one_line(argv, message, capsys):
    assert main(["train", "--model", "gcnn", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_train_eval_sample_and_compare_beside_a_tcn_and_an_lstm(tiny_npz, tmp_path, capsys):
    runs = {}
    for name, argv in (("gcnn", ["--model", "gcnn", "--hidden-size", "8", "--num-layers", "2"]),
                       ("tcn", ["--model", "tcn", "--hidden-size", "8", "--num-layers", "2"]),
                       ("rnn", ["--cell", "lstm", "--hidden-size", "8"])):  # fmt: skip
        runs[name] = tmp_path / name
        assert main(["train", "--data", str(tiny_npz), *argv, "--epochs", "2", "--out",
                     str(runs[name]), "--no-progress", "--threads", "1"]) == 0  # fmt: skip
    run = runs["gcnn"]
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "gcnn" and config["config"]["kernel_size"] == 4
    result = json.loads((run / "result.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "test"]) == 0
    assert f"{result['test_nll']:.4f}" in capsys.readouterr().out
    mids = [tmp_path / "a.mid", tmp_path / "b.mid"]
    for mid in mids:
        assert main(["sample", str(run), "--out", str(mid), "--frames", "16", "--seed", "5"]) == 0
    assert mids[0].read_bytes() == mids[1].read_bytes() and mids[0].stat().st_size > 0
    capsys.readouterr()
    assert main(["compare", *map(str, runs.values())]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].count("NLL [nats/frame]") == 2  # valid and test: shared
    rows = [line for line in table.splitlines() if "| gcnn |" in line]
    assert len(rows) == 1
