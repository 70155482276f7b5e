"""The RNN-RBM (rnnlab.models.rnnrbm, rnnlab.families.rnnrbm): the RBM's free energy and exact
partition function against brute force over both layers, the AIS estimate against the exact
value within its reported spread, Gibbs sampling against the exact distribution, the CD-k
gradient against its float64 transcription, the recurrence's causality, and the family through
the CLI (options it cannot honour refused, the AIS settings and spread recorded, learning)."""

import json
import math

import numpy as np
import pytest
import torch

from rnnlab.cli import main
from rnnlab.errors import ConfigError
from rnnlab.families import make_config
from rnnlab.families.rnnrbm import RNNRBMConfig, ais_nll
from rnnlab.models.rnn import ModelConfig
from rnnlab.models.rnnrbm import (
    RNNRBM,
    ais_log_partition,
    all_binary,
    exact_log_partition,
    free_energy,
    gibbs,
    uniform_betas,
)

f64 = torch.float64


def random_rbm(D, K, N=1, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(D, K, generator=g, dtype=f64)
    b_v = torch.randn(N, D, generator=g, dtype=f64)
    b_h = torch.randn(N, K, generator=g, dtype=f64)
    return b_v, b_h, W


def brute_force_log_z(b_v, b_h, W):
    """log sum over every (v, h) of exp(-E(v, h)), E = -b_v.v - b_h.h - v^T W h (one RBM)."""
    D, K = W.shape
    v, h = all_binary(D), all_binary(K)  # (2^D, D), (2^K, K)
    neg_energy = (v @ b_v)[:, None] + (h @ b_h)[None, :] + v @ W @ h.t()  # (2^D, 2^K)
    return torch.logsumexp(neg_energy.flatten(), 0)


def test_free_energy_sums_the_hidden_units_out():
    b_v, b_h, W = random_rbm(5, 4)
    h = all_binary(4)
    for v in all_binary(5):
        neg_energy = v @ b_v[0] + h @ b_h[0] + (v @ W) @ h.t()  # (2^K,)
        torch.testing.assert_close(-free_energy(v, b_v[0], b_h[0], W),
                                   torch.logsumexp(neg_energy, 0))  # fmt: skip


@pytest.mark.parametrize(("D", "K"), [(6, 5), (10, 8)])
def test_exact_log_partition_matches_brute_force_over_both_layers(D, K):
    b_v, b_h, W = random_rbm(D, K, N=3)
    exact = exact_log_partition(b_v, b_h, W)
    for n in range(3):
        torch.testing.assert_close(exact[n], brute_force_log_z(b_v[n], b_h[n], W))


def test_exact_enumeration_refuses_large_frames():
    b_v, b_h, W = random_rbm(21, 2)
    with pytest.raises(ConfigError, match="at most 20"):
        exact_log_partition(b_v, b_h, W)


def test_ais_matches_the_exact_log_partition_within_its_reported_spread():
    """A 10 x 8 RBM with strong weights, three frames' biases at once: R = 6 independent AIS runs
    (100 chains, 1000 temperatures); their mean within twice their standard deviation of the
    exact value, and that spread small (the estimate means something)."""
    b_v, b_h, W = random_rbm(10, 8, N=3, scale=1.5, seed=4)
    exact = exact_log_partition(b_v, b_h, W)
    g = torch.Generator().manual_seed(0)
    runs = torch.stack([ais_log_partition(b_v, b_h, W, 100, uniform_betas(1000), g).log_z
                        for _ in range(6)])  # fmt: skip
    mean, std = runs.mean(0), runs.std(0)
    assert (std < 0.05).all(), std
    assert ((mean - exact).abs() <= 2 * std).all(), (mean, exact, std)
    # float32 chains (as a model runs them) agree as well
    b_v32, b_h32, W32 = b_v.float(), b_h.float(), W.float()
    runs32 = torch.stack([ais_log_partition(b_v32, b_h32, W32, 100, uniform_betas(1000), g).log_z
                          for _ in range(6)])  # fmt: skip
    assert ((runs32.mean(0) - exact).abs() <= 2 * runs32.std(0) + 0.01).all()


def test_ais_with_one_temperature_is_plain_importance_sampling_and_worse():
    """S = 1 is importance sampling from the base: unbiased in Z, but with a strong coupling
    its log estimate sits far below the exact value, where 1000 temperatures do not."""
    b_v, b_h, W = random_rbm(10, 8, scale=3.0, seed=5)
    exact = float(exact_log_partition(b_v, b_h, W))
    g = torch.Generator().manual_seed(1)
    crude = float(ais_log_partition(b_v, b_h, W, 10, uniform_betas(1), g).log_z)
    fine = float(ais_log_partition(b_v, b_h, W, 10, uniform_betas(1000), g).log_z)
    assert exact - crude > 1.0 and abs(fine - exact) < 0.2


def test_gibbs_chains_reach_the_rbms_distribution():
    b_v, b_h, W = random_rbm(4, 3, seed=2)
    log_p = -free_energy(all_binary(4), b_v, b_h, W) - exact_log_partition(b_v, b_h, W)
    g = torch.Generator().manual_seed(0)
    v = gibbs(torch.zeros(40_000, 4, dtype=f64), b_v, b_h, W, 30, g)
    for state, p in zip(all_binary(4), log_p.exp(), strict=True):
        freq = (v == state).all(-1).double().mean()
        assert abs(freq - p) < 0.01, (state, freq, p)


def test_cd_gradient_matches_its_float64_transcription():
    """d/dW [F(v) - F(v*)] = -v sigma(b_h + v W)^T + v* sigma(b_h + v* W)^T (Hinton 2002's
    positive minus negative statistics), and the same for the biases; free energy gradcheck."""
    b_v, b_h, W = random_rbm(6, 5, N=4, seed=3)
    g = torch.Generator().manual_seed(0)
    v = torch.bernoulli(torch.full((4, 6), 0.4, dtype=f64), generator=g)
    v_neg = gibbs(v, b_v, b_h, W, 3, g)
    params = [t.clone().requires_grad_() for t in (b_v, b_h, W)]
    cost = (free_energy(v, *params) - free_energy(v_neg, *params)).sum()
    grad_bv, grad_bh, grad_W = torch.autograd.grad(cost, params)
    pos, neg = torch.sigmoid(b_h + v @ W), torch.sigmoid(b_h + v_neg @ W)
    torch.testing.assert_close(grad_W, -v.t() @ pos + v_neg.t() @ neg)
    torch.testing.assert_close(grad_bv, -v + v_neg)
    torch.testing.assert_close(grad_bh, -pos + neg)
    assert torch.autograd.gradcheck(lambda a, b, c: free_energy(v, a, b, c), params)


def tiny_model(frame_size=6, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(cell="tanh", hidden_size=5, frame_size=frame_size, dropout=0.0)
    return RNNRBM(cfg, rbm_size=4, gibbs_steps=5).double()


def test_a_frames_biases_depend_only_on_the_frames_before_it():
    model = tiny_model()
    x = torch.bernoulli(torch.full((1, 7, 6), 0.5, dtype=f64))
    b_v, b_h = model.conditional_biases(x)
    y = x.clone()
    y[0, 3] = 1 - y[0, 3]  # change frame 4 (t = 3)
    c_v, c_h = model.conditional_biases(y)
    torch.testing.assert_close(b_v[:, :4], c_v[:, :4])
    torch.testing.assert_close(b_h[:, :4], c_h[:, :4])
    assert not torch.allclose(b_v[:, 4:], c_v[:, 4:])


def test_the_models_ais_likelihood_matches_the_exact_one_on_small_frames():
    """With D = 6 keys each frame's conditional distribution can be normalised exactly: it sums
    to one over the 64 frames, and the AIS estimate of every frame's log P(v_t | v_<t) and of the
    NLL per frame (ais_nll, with its runs) agree with it."""
    model = tiny_model()
    pieces = [torch.bernoulli(torch.full((n, 6), 0.3, dtype=f64)) for n in (5, 3)]
    x = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
    lengths = torch.tensor([5, 3])
    b_v, b_h = model.conditional_biases(x)
    log_z = exact_log_partition(b_v, b_h, model.W)  # (B, T)
    all_frames = all_binary(6)[:, None, None, :]  # (64, 1, 1, D)
    total = (-free_energy(all_frames, b_v, b_h, model.W) - log_z).exp().sum(0)
    torch.testing.assert_close(total, torch.ones_like(total))
    exact = (-free_energy(x, b_v, b_h, model.W) - log_z)[torch.arange(5)[None] < lengths[:, None]]
    estimate = model.ais_log_prob(x, lengths, 50, uniform_betas(300),
                                  torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(estimate, exact.detach(), atol=0.02, rtol=0)
    result = ais_nll(model, pieces, 50, 300, 3, seed=0)
    exact_nll = -float(exact.detach().sum()) / 8
    assert result.frames == 8 and len(result.nll_runs) == 3 and result.std > 0
    assert abs(result.mean - exact_nll) < 0.02


def test_sample_draws_binary_frames():
    model = tiny_model()
    x = model.sample(9, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 9, 6) and set(x.unique().tolist()) <= {0.0, 1.0}


def test_options_the_family_cannot_honour_are_refused(capsys):
    with pytest.raises(ConfigError, match="unknown option.*nade_size"):
        RNNRBMConfig.from_dict({"nade_size": 10})
    assert main(["train", "--model", "rnn-rbm", "--data", "jsb", "--nade-size", "10"]) == 2
    assert "--nade-size is not an option of the rnn-rbm model" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cd_k must be positive"):
        make_config({"model": "rnn-rbm", "data": "jsb", "cd_k": 0})
    with pytest.raises(ConfigError, match="ais_chains must be positive"):
        make_config({"model": "rnn-rbm", "data": "jsb", "ais_chains": 0})


def chords(tmp_path):
    """Pieces alternating two chords: a model that uses the previous frame predicts each frame
    almost surely; independent keys cannot."""
    from rnnlab.data.polyphonic import PianoRolls, save_npz

    a, b = np.zeros(88, bool), np.zeros(88, bool)
    a[[40, 44, 47]], b[[45, 49, 52]] = True, True
    piece = np.stack([a, b] * 8)  # (16, 88)
    path = tmp_path / "chords.npz"
    save_npz(PianoRolls("chords", "test", {"train": [piece] * 8, "valid": [piece] * 2,
                                           "test": [piece] * 2}), path)  # fmt: skip
    return path


def test_training_learns_and_records_the_ais_estimate(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "rnn-rbm", "--data", str(chords(tmp_path)), "--hidden-size",
            "16", "--rbm-size", "16", "--batch-size", "2", "--lr", "0.01", "--epochs", "25",
            "--cd-k", "3", "--pretrain-epochs", "2", "--ais-runs", "3", "--ais-chains", "8",
            "--ais-temperatures", "50", "--threads", "1", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "test NLL estimate" in summary and "3 runs of 8 chains, 50 temperatures" in summary
    result = json.loads((out / "result.json").read_text())
    assert result["ais_runs"] == 3 and result["ais_chains"] == 8
    assert result["ais_temperatures"] == 50 and len(result["test_ais_nll_runs"]) == 3
    assert result["test_ais_nll_std"] >= 0 and math.isfinite(result["test_ais_nll"])
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = history[0]["valid_ais_nll"]
    # independent fair coins would cost 88 log 2 = 61 nats a frame; learnt: a few nats at most
    assert first > result["valid_score"] and result["test_ais_nll"] < 5.0
    assert main(["sample", str(out), "--out", str(tmp_path / "x.mid"), "--frames", "8"]) == 0


def test_a_resumed_run_draws_the_chains_the_uninterrupted_one_would(tmp_path):
    data = str(chords(tmp_path))
    common = ["--model", "rnn-rbm", "--data", data, "--hidden-size", "8", "--rbm-size", "8",
              "--batch-size", "2", "--cd-k", "2", "--pretrain-epochs", "1", "--ais-runs", "0",
              "--threads", "1", "--no-progress"]  # fmt: skip
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train", *common, "--epochs", "3", "--out", str(whole)]) == 0
    assert main(["train", *common, "--epochs", "2", "--out", str(split)]) == 0
    assert main(["train", "--out", str(split), "--resume", "--epochs", "3", "--no-progress"]) == 0

    def valid(run):
        rows = (run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(row)["valid_ais_nll"] for row in rows]

    assert valid(whole) == valid(split) and len(valid(whole)) == 3
