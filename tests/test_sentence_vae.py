"""The sentence VAE: annealing schedules, free bits, word dropout only in training, the IW bound
against the ELBO, collapse diagnostics, and the generate / reconstruct / interpolate commands."""

import json

import pytest
import torch

from rnnlab.cli import main
from rnnlab.families.sentence import mutual_information
from rnnlab.losses import free_bits_kl, kl_weight
from rnnlab.models.rnn import ModelConfig
from rnnlab.models.sentence_vae import SentenceVAE


def test_kl_schedules():
    assert kl_weight("linear", 1, 4) == 0.25 and kl_weight("linear", 9, 4) == 1.0
    assert kl_weight("logistic", 2, 4) == pytest.approx(0.5)
    assert kl_weight("logistic", 0, 4) < 0.01 < 0.99 < kl_weight("logistic", 4, 4)
    assert [kl_weight("cyclical", p, 2) for p in (0, 0.5, 1, 1.5, 2)] == [0, 0.5, 1, 1, 0]
    assert kl_weight("logistic", 3, 0) == 1.0
    with pytest.raises(ValueError, match="known: linear"):
        kl_weight("cosine", 1, 2)


def test_free_bits_hold_each_unit_up():
    kl_units = torch.tensor([[0.1, 2.0], [0.3, 4.0]])
    assert float(free_bits_kl(kl_units, 0.5)) == pytest.approx(0.5 + 3.0)
    assert float(free_bits_kl(kl_units, 0.0)) == pytest.approx(0.2 + 3.0)


def _vae(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(model="sentence-vae", cell="gru", hidden_size=8, z_size=3, **kw)
    return SentenceVAE(cfg, vocab_size=15)


def test_word_dropout_is_off_in_evaluation():
    vae = _vae(word_dropout=0.9)
    words, lengths = torch.randint(4, 15, (5, 6)), torch.tensor([6, 6, 4, 3, 1])
    vae.eval()
    a = vae(words, lengths, torch.Generator().manual_seed(1))
    b = vae(words, lengths, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.log_lik, b.log_lik)
    vae.train()
    c = vae(words, lengths, torch.Generator().manual_seed(1))
    assert not torch.allclose(a.log_lik, c.log_lik)  # the same noise, but words dropped


def test_iw_estimate_is_above_the_elbo_on_average():
    vae = _vae(latent_every_step=True).double().eval()
    words, lengths = torch.randint(4, 15, (3, 5)), torch.tensor([5, 3, 2])
    gen = torch.Generator().manual_seed(2)
    elbo = torch.stack([(lambda t: t.log_lik - t.kl)(vae(words, lengths, gen)) for _ in range(200)])
    iw = vae.iw_log_likelihood(words, lengths, 200, gen)
    assert (iw > elbo.mean(0)).all()


def test_dropout_acts_in_training_only():
    vae = _vae(dropout=0.5).eval()
    words, lengths = torch.randint(4, 15, (4, 5)), torch.tensor([5, 4, 2, 1])
    a = vae(words, lengths, torch.Generator().manual_seed(1)).log_lik
    torch.testing.assert_close(a, vae(words, lengths, torch.Generator().manual_seed(1)).log_lik)
    vae.train()
    assert not torch.allclose(a, vae(words, lengths, torch.Generator().manual_seed(1)).log_lik)


def test_the_sentence_lm_baseline_is_the_decoder_alone_and_its_nll_is_exact():
    torch.manual_seed(0)
    cfg = ModelConfig(model="sentence-lm", cell="lstm", hidden_size=8, dropout=0.0)
    lm = SentenceVAE(cfg, vocab_size=15).double().eval().requires_grad_(False)
    assert not hasattr(lm, "encoder") and lm.z_size == 0
    words, lengths = torch.randint(4, 15, (3, 5)), torch.tensor([5, 3, 1])
    terms = lm(words, lengths)
    assert terms.kl.abs().max() == 0 and terms.log_ratio.abs().max() == 0
    # By hand: run the decoder one word at a time from a zero state and add the log-probabilities.
    for b in range(3):
        state, total, previous = None, 0.0, 0  # <sos>
        for t in range(int(lengths[b])):
            x = lm.embedding(torch.tensor([[previous]]))
            h, state = lm.decoder(x, state=state)
            total += lm.output(h[0, -1]).log_softmax(-1)[words[b, t]].item()
            previous = int(words[b, t])
        assert float(terms.log_lik[b]) == pytest.approx(total, rel=1e-12)
    torch.testing.assert_close(lm.iw_log_likelihood(words, lengths, 4), terms.log_lik)


def test_mutual_information_is_zero_for_identical_posteriors_and_positive_otherwise():
    gen = torch.Generator().manual_seed(3)
    same = mutual_information(torch.zeros(400, 2), torch.zeros(400, 2), gen)
    assert abs(same) < 0.05
    apart = torch.randn(400, 2, generator=gen) * 5
    assert mutual_information(apart, torch.full((400, 2), -4.0), gen) > 3.0


def test_train_generate_reconstruct_interpolate(tmp_path, capsys):
    words = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "far"]
    rng = torch.Generator().manual_seed(0)
    for split, n in (("train", 60), ("valid", 10), ("test", 10)):
        lines = [" ".join(words[i] for i in torch.randint(0, 10, (int(k),), generator=rng))
                 for k in torch.randint(2, 7, (n,), generator=rng)]  # fmt: skip
        (tmp_path / f"toy.{split}.txt").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    argv = ["train", "--data", "toy", "--data-dir", str(tmp_path), "--model", "sentence-vae",
            "--cell", "lstm", "--hidden-size", "8", "--z-size", "2", "--word-dropout", "0.3",
            "--kl-anneal", "2", "--kl-schedule", "cyclical", "--free-bits", "0.1",
            "--epochs", "2", "--iw-samples", "5", "--batch-size", "8", "--out", str(run),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "importance-weighted test NLL" in capsys.readouterr().out
    result = json.loads((run / "result.json").read_text())
    for key in ("test_neg_elbo", "test_iw_nll", "test_iw_ppl", "test_kl", "test_active_units",
                "test_mutual_info"):  # fmt: skip
        assert key in result
    assert result["iw_samples"] == 5 and "test_nll" not in result
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"valid_kl", "valid_active_units", "valid_mutual_info"} <= set(history[0])
    assert main(["generate", str(run), "--n", "2", "--temperature", "1", "--top-k", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    lm_run = tmp_path / "lm"
    argv[argv.index("sentence-vae")] = "sentence-lm"
    assert main(argv[: argv.index("--out") + 1] + [str(lm_run), "--no-progress"]) == 2
    assert "--z-size is not an option of the sentence-lm model" in capsys.readouterr().err
    for latent in ("--z-size", "--kl-anneal", "--kl-schedule", "--free-bits", "--iw-samples"):
        k = argv.index(latent)
        del argv[k : k + 2]
    assert main(argv[: argv.index("--out") + 1] + [str(lm_run), "--no-progress"]) == 0
    assert "sentence-lm/lstm" in capsys.readouterr().out
    lm_result = json.loads((lm_run / "result.json").read_text())
    assert lm_result["test_kl"] == 0 and lm_result["iw_samples"] == 1
    assert lm_result["test_iw_nll"] == pytest.approx(lm_result["test_neg_elbo"], rel=1e-6)
    assert main(["eval", str(run), "--split", "test", "--iw-samples", "5"]) == 0
    out = capsys.readouterr().out
    assert f"importance-weighted NLL {result['test_iw_nll']:.2f}" in out and "(k=5)" in out
    assert main(["eval", str(run), "--iw-samples", "-1"]) == 2
    assert "--iw-samples must be" in capsys.readouterr().err
    assert main(["generate", str(lm_run), "--n", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["reconstruct", str(lm_run), "the cat"]) == 2
    assert "needs a model with an encoder (sentence-vae)" in capsys.readouterr().err
    assert main(["reconstruct", str(run), "the cat sat zebra"]) == 0
    out = capsys.readouterr().out
    assert "1 word(s)" in out and "<unk>" in out
    assert main(["interpolate", str(run), "the cat", "a dog ran", "--steps", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[-3:]] == ["0.00", "0.50", "1.00"]
    # The run directory keeps its vocabulary: with the corpus changed, then gone, it still
    # decodes the same sentences.
    assert main(["reconstruct", str(run), "the cat"]) == 0
    before = capsys.readouterr().out
    (tmp_path / "toy.train.txt").write_text("entirely new words here\n")
    assert main(["reconstruct", str(run), "the cat"]) == 0
    assert capsys.readouterr().out == before
    for split in ("train", "valid", "test"):
        (tmp_path / f"toy.{split}.txt").unlink()
    assert main(["reconstruct", str(run), "the cat"]) == 0
    assert capsys.readouterr().out == before
    assert main(["generate", str(run), "--n", "2"]) == 0
