"""Latent-variable pieces: the pure loss functions, the output heads for real values, and the VRNN
(its terms, the importance-weighted estimate, training from the CLI)."""

import json
import math

import pytest
import torch
from torch import distributions as D

from rnnlab.cli import main
from rnnlab.errors import ConfigError
from rnnlab.heads import GaussianHead, MixtureGaussianHead
from rnnlab.losses import (
    elbo,
    gaussian_kl,
    gaussian_log_prob,
    importance_weighted_bound,
    mixture_log_prob,
)
from rnnlab.models.rnn import ModelConfig
from rnnlab.models.vrnn import VRNN


def test_gaussian_log_prob_matches_torch():
    x, mean, log_var = torch.randn(3, 4, dtype=torch.float64).unbind(0)
    expected = D.Normal(mean, (0.5 * log_var).exp()).log_prob(x).sum()
    torch.testing.assert_close(gaussian_log_prob(x, mean, log_var), expected)


def test_closed_form_kl_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(5, dtype=torch.float64, generator=gen) for _ in range(4))
    z = mq + (0.5 * lq).exp() * torch.randn(400_000, 5, dtype=torch.float64, generator=gen)
    mc = (gaussian_log_prob(z, mq, lq) - gaussian_log_prob(z, mp, lp)).mean()
    exact = gaussian_kl(mq, lq, mp, lp)
    assert abs(float(mc - exact)) < 0.02 * max(1.0, float(exact))
    assert float(gaussian_kl(mq, lq, mq, lq)) == pytest.approx(0.0, abs=1e-12)


def test_mixture_log_prob_matches_torch():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, dtype=torch.float64, generator=gen)
    means = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    log_vars = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    x = torch.randn(2, dtype=torch.float64, generator=gen)
    mix = D.MixtureSameFamily(
        D.Categorical(logits=logits), D.Independent(D.Normal(means, (0.5 * log_vars).exp()), 1)
    )
    torch.testing.assert_close(mixture_log_prob(x, logits, means, log_vars), mix.log_prob(x))


def _linear_gaussian(x, q_mean, q_log_var, k, gen):
    """z ~ N(0, 1), x | z ~ N(z, 1): log p(x) = log N(x; 0, 2); the posterior is N(x/2, 1/2).
    Returns log w of k samples from q = N(q_mean, exp(q_log_var))."""
    z = q_mean + (0.5 * q_log_var).exp() * torch.randn(k, *x.shape, dtype=x.dtype, generator=gen)
    zero = torch.zeros_like(z)
    log_joint = gaussian_log_prob(z[..., None], zero[..., None], zero[..., None])
    log_joint = log_joint + gaussian_log_prob(x[..., None], z[..., None], zero[..., None])
    return log_joint - gaussian_log_prob(z[..., None], q_mean[..., None], q_log_var[..., None])


def test_iw_bound_is_exact_with_the_exact_posterior():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(10, dtype=torch.float64, generator=gen)
    exact = gaussian_log_prob(x[:, None], torch.zeros(10, 1), torch.full((10, 1), math.log(2)))
    for k in (1, 3, 20):
        log_w = _linear_gaussian(x, x / 2, torch.full_like(x, math.log(0.5)), k, gen)
        torch.testing.assert_close(importance_weighted_bound(log_w, 0), exact.double())


def test_iw_bound_tightens_as_k_grows_and_k1_is_the_elbo():
    gen = torch.Generator().manual_seed(3)
    x = torch.full((20_000,), 1.5, dtype=torch.float64)  # many independent estimates
    q_mean, q_log_var = torch.zeros_like(x), torch.zeros_like(x)  # a poor posterior
    exact = float(
        gaussian_log_prob(torch.tensor([1.5]), torch.zeros(1), torch.tensor([math.log(2)]))
    )
    bounds = [float(importance_weighted_bound(_linear_gaussian(x, q_mean, q_log_var, k, gen), 0)
                    .mean()) for k in (1, 4, 32)]  # fmt: skip
    assert bounds[0] < bounds[1] < bounds[2] < exact
    # k = 1: the ELBO, E_q[log p(x | z)] - KL(q || p(z)), here in closed form.
    expected_ll = -0.5 * (math.log(2 * math.pi) + 1.5**2 + 1.0)  # E[(x - z)^2] = x^2 + 1
    closed = float(elbo(torch.tensor(expected_ll), gaussian_kl(*(torch.zeros(1),) * 4)))
    assert bounds[0] == pytest.approx(closed, abs=0.03)


def test_real_valued_heads_match_torch():
    torch.manual_seed(4)
    h, x = torch.randn(3, 5), torch.randn(3, 2)
    head = GaussianHead(5, 2)
    expected = D.Normal(head.mean(h), (0.5 * head.log_var(h)).exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(head.log_prob(x, h), expected)
    assert head.sample(h).shape == (3, 2)
    mix = MixtureGaussianHead(5, 2, 4)
    assert mix.log_prob(x, h).shape == (3,) and mix.sample(h).shape == (3, 2)
    # Far more mass near the mixture than far from it.
    near = mix.sample(h[:1].expand(2000, -1), torch.Generator().manual_seed(0))
    assert mix.log_prob(near, h[:1].expand(2000, -1)).mean() > mix.log_prob(near + 50, h[:1]).mean()


def _vrnn(output="bernoulli", **kw):
    torch.manual_seed(5)
    cfg = ModelConfig(model="vrnn", output=output, cell="gru", hidden_size=6, z_size=3,
                      feature_size=5, nade_size=4, dropout=0.0, **kw)  # fmt: skip
    return VRNN(cfg).double()


@pytest.mark.parametrize("output", ["bernoulli", "nade", "gaussian", "gmm"])
def test_vrnn_terms_ignore_padding_and_kl_is_positive(output):
    model = _vrnn(output)
    x = torch.bernoulli(torch.full((3, 7, 88), 0.1, dtype=torch.float64))
    lengths = torch.tensor([7, 4, 1])
    batch = model(x, lengths, generator=torch.Generator().manual_seed(0))
    assert (batch.kl >= 0).all() and batch.num_frames == 12
    assert (batch.kl[1, 4:] == 0).all() and (batch.log_lik[2, 1:] == 0).all()
    # Whatever lies past each length changes nothing (the same noise: the same generator seed).
    beyond = torch.arange(7)[None, :, None] >= lengths[:, None, None]
    noisy = torch.where(beyond, torch.bernoulli(torch.full_like(x, 0.5)), x)
    again = model(noisy, lengths, generator=torch.Generator().manual_seed(0))
    for a, b in zip(batch[:3], again[:3], strict=True):
        torch.testing.assert_close(a, b)
    assert torch.isfinite(batch.total)
    if output in ("bernoulli", "nade"):  # probabilities of binary frames: a positive bound
        assert batch.neg_elbo_per_frame() > 0


def test_vrnn_iw_estimate_is_above_the_elbo_on_average():
    model = _vrnn()
    x = torch.bernoulli(torch.full((4, 6, 88), 0.1, dtype=torch.float64))
    lengths = torch.tensor([6, 5, 4, 6])
    gen = torch.Generator().manual_seed(1)
    elbos = torch.stack([model(x, lengths, generator=gen).total for _ in range(50)])
    iw = model.iw_log_likelihood(x, lengths, 50, gen).sum()
    assert iw > elbos.mean()
    assert model.sample(5, 2, torch.Generator().manual_seed(0)).shape == (2, 5, 88)


def test_vrnn_refuses_what_it_does_not_have():
    with pytest.raises(ConfigError, match="no dropout"):
        VRNN(ModelConfig(model="vrnn", dropout=0.3))
    with pytest.raises(ConfigError, match="num_layers=2"):
        VRNN(ModelConfig(model="vrnn", dropout=0.0, num_layers=2))


def test_train_a_vrnn_from_the_cli(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(tiny_npz), "--model", "vrnn", "--output", "nade",
            "--cell", "lstm", "--hidden-size", "8", "--z-size", "2", "--nade-size", "4",
            "--epochs", "2", "--kl-anneal", "4", "--iw-samples", "7",
            "--batch-size", "2", "--out", str(run), "--no-progress"]  # fmt: skip
    assert main([*argv, "--dropout", "0.3"]) == 2  # the VRNN has no dropout: refused
    assert "--dropout is not an option of the vrnn model" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_npz), "--model", "vrnn", "--mixtures", "3"]) == 2
    assert "--mixtures applies only with --output gmm" in capsys.readouterr().err
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "negative ELBO" in out and "(k=7)" in out
    result = json.loads((run / "result.json").read_text())
    assert result["iw_samples"] == 7 and "test_nll" not in result
    assert result["test_iw_nll"] <= result["test_neg_elbo"] + 1.0
    assert main(["compare", str(run)]) == 0
    table = capsys.readouterr().out
    assert "test -ELBO (bound)" in table and "test IW NLL" in table and "test NLL |" not in table
    assert main(["sample", str(run), "--png", str(tmp_path / "r.png"), "--frames", "8"]) == 0
