"""The NADE output (RNN-NADE): a normalised distribution, the vectorised likelihood against the
unit-by-unit definition, sampling, and training through the CLI."""

import itertools
import json

import pytest
import torch

from rnnlab.cli import main
from rnnlab.errors import ConfigError
from rnnlab.heads import NADEHead
from rnnlab.models.rnn import ModelConfig, RNNPredictor


def test_nade_sums_to_one_over_every_frame():
    torch.manual_seed(0)
    head = NADEHead(3, 6, 5).double()
    h = torch.randn(2, 3, dtype=torch.float64)
    frames = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6)), dtype=torch.float64)
    log_p = head.log_prob(frames[:, None, :].expand(-1, 2, -1), h.expand(len(frames), -1, -1))
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(2, dtype=torch.float64))


def test_vectorised_likelihood_matches_the_unit_by_unit_definition():
    torch.manual_seed(1)
    D, K, H = 7, 4, 3
    head = NADEHead(H, D, K).double()
    x = torch.bernoulli(torch.full((5, D), 0.4, dtype=torch.float64))
    h = torch.randn(5, H, dtype=torch.float64)
    b_v = h @ head.to_bv.weight.t() + head.to_bv.bias
    b_h = h @ head.to_bh.weight.t() + head.to_bh.bias
    expected = torch.zeros(5, dtype=torch.float64)
    for n in range(5):
        for i in range(D):
            a = b_h[n] + head.W[:, :i] @ x[n, :i]
            p = torch.sigmoid(b_v[n, i] + head.V[i] @ torch.sigmoid(a))
            expected[n] += torch.log(p if x[n, i] == 1 else 1 - p)
    torch.testing.assert_close(head.log_prob(x, h), expected)


def test_nade_gradients_pass_gradcheck():
    torch.manual_seed(2)
    head = NADEHead(3, 5, 4).double()
    x = torch.bernoulli(torch.full((2, 5), 0.5, dtype=torch.float64))
    h = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: head.log_prob(x, h), (h,))


def test_samples_follow_the_distribution():
    torch.manual_seed(3)
    head = NADEHead(2, 3, 4).double()
    h = torch.randn(1, 2, dtype=torch.float64).expand(40_000, -1)
    samples = head.sample(h, torch.Generator().manual_seed(0))
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    frames = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    probs = head.log_prob(frames, h[: len(frames)]).exp()
    for frame, p in zip(frames, probs, strict=True):
        freq = (samples == frame).all(-1).double().mean()
        assert abs(freq - p) < 0.01


def test_rnn_nade_is_stored_resolved_and_samples():
    cfg = ModelConfig(model="rnn-nade", cell="gru", hidden_size=8, nade_size=6)
    assert (cfg.model, cfg.output) == ("rnn", "nade")
    model = RNNPredictor(cfg)
    rolls = model.sample(5, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert rolls.shape == (2, 5, 88)
    with pytest.raises(ConfigError, match="unknown output 'made'"):
        ModelConfig(output="made")


def test_train_rnn_nade_from_the_cli(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(tiny_npz), "--model", "rnn-nade", "--cell", "lstm",
            "--hidden-size", "6", "--nade-size", "5", "--epochs", "2", "--batch-size", "2",
            "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    document = json.loads((run / "config.json").read_text())
    assert (document["family"], document["config"]["nade_size"]) == ("rnn-nade", 5)
    assert json.loads((run / "result.json").read_text())["model"] == "rnn-nade"
    assert main(["eval", str(run)]) == 0
    assert "test: NLL" in capsys.readouterr().out
