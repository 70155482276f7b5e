"""Training the sentence VAE (``rnnlab train --data ptb --model sentence-vae``) and its baseline,
a language model over independent sentences (``--model sentence-lm``, scored by the same code:
its KL is 0 and its NLL exact).

The loss per sentence is -log p(w | z) + beta KL(q || p) (beta from ``--kl-schedule`` over
``--kl-anneal`` epochs; with ``--free-bits`` each unit's batch-mean KL counts at least that much);
model selection uses the unweighted negative ELBO per sentence on the validation set. Every
evaluation also reports the collapse diagnostics: KL per sentence, active units (Burda et al. 2016:
units whose posterior mean varies over the data, Cov > 0.01) and the mutual information between x
and z under q (He et al. 2019's estimate, the aggregate posterior taken as the mixture over the
evaluated sentences). After training, the best weights give the importance-weighted NLL per
sentence on the test set with k samples, and the perplexity exp(sum NLL / tokens), tokens
counting every word and each <eos>.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from rnnlab.data.text import pad_batch, sentence_vocab, sentences
from rnnlab.errors import RunDirError
from rnnlab.losses import free_bits_kl, gaussian_log_prob, kl_weight
from rnnlab.models.sentence_vae import SentenceVAE
from rnnlab.train.checkpoint import load_model_weights
from rnnlab.train.config import RunConfig
from rnnlab.train.loop import MODEL, Problem
from rnnlab.train.text import load_corpus

EVAL_SEED, IW_SEED, EVAL_BATCH, DIAGNOSTIC_SENTENCES = 2**40 + 21, 2**40 + 22, 64, 500


class SentenceVAEProblem(Problem):
    score = "neg_elbo"

    def __init__(self, cfg: RunConfig) -> None:
        t = cfg.train
        self.cfg = cfg
        corpus, chars = load_corpus(t.data, t.data_dir)
        if chars:
            raise RunDirError("the sentence VAE works on words, not characters")
        self.unknown = corpus.unknown
        self.vocab = sentence_vocab(corpus)
        self.sets = {split: sentences(corpus, split) for split in ("train", "valid", "test")}
        train = self.sets["train"]
        self.train = [s for s in train if len(s) <= t.max_len + 1] if t.max_len else train
        self.model = SentenceVAE(cfg.model, len(self.vocab))
        self.iw: dict[str, Any] = {}

    def train_batches(self, epoch: int) -> Any:
        t = self.cfg.train
        gen = torch.Generator().manual_seed(t.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train), generator=gen).tolist()
        # Buckets of similar length inside each shuffled chunk of 50 batches: little padding.
        chunk = 50 * t.batch_size
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: len(self.train[i]))
            batches += [part[i : i + t.batch_size] for i in range(0, len(part), t.batch_size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        for n, k in enumerate(perm):
            words, lengths = pad_batch([self.train[i] for i in batches[k]])
            yield words, lengths, epoch - 1 + n / len(batches)

    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, float, float]:
        t = self.cfg.train
        words, lengths, progress = batch
        terms = self.model(words, lengths)
        beta = kl_weight(t.kl_schedule, progress, t.kl_anneal)
        kl = free_bits_kl(terms.kl_units, t.free_bits) if t.free_bits else terms.kl.mean()
        loss = -terms.log_lik.mean() + beta * kl
        neg_elbo = -(terms.log_lik - terms.kl).sum()
        return loss, float(neg_elbo.detach()), words.shape[0]

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Any]:
        model = self.model
        was_training = model.training
        model.eval()
        data = self.sets[split]
        gen = torch.Generator().manual_seed(EVAL_SEED)
        neg_elbo, kl, means, log_vars = 0.0, 0.0, [], []
        for start in range(0, len(data), EVAL_BATCH):
            words, lengths = pad_batch(data[start : start + EVAL_BATCH])
            terms = model(words, lengths, gen)
            neg_elbo += float(-(terms.log_lik - terms.kl).sum())
            kl += float(terms.kl.sum())
            means.append(terms.mean)
            log_vars.append(terms.log_var)
        model.train(was_training)
        mean, log_var = torch.cat(means), torch.cat(log_vars)
        n = len(data)
        return {
            "score": neg_elbo / n,
            "kl": kl / n,
            "active_units": int((mean.var(0) > 0.01).sum()) if mean.shape[1] else 0,
            "mutual_info": mutual_information(mean[:DIAGNOSTIC_SENTENCES],
                                              log_var[:DIAGNOSTIC_SENTENCES], gen),
        }  # fmt: skip

    @torch.no_grad()
    def finalise(self, out: Path) -> None:
        if not (out / MODEL).is_file():
            return
        model = SentenceVAE(self.cfg.model, len(self.vocab))
        load_model_weights(out / MODEL, model)
        self.model = model
        self.iw = self.iw_nll("test", self.cfg.train.iw_samples)

    @torch.no_grad()
    def iw_nll(self, split: str, k: int) -> dict[str, Any]:
        """The importance-weighted NLL per sentence of a split with k samples (1 for the
        sentence LM, whose NLL is exact), and the perplexity it gives."""
        model = self.model
        assert isinstance(model, SentenceVAE)
        was_training = model.training
        model.eval()
        k = k if model.latent else 1
        gen = torch.Generator().manual_seed(IW_SEED)
        # Sentences in order of length, so that a batch of k copies each pads little (the sum
        # does not depend on the order; the samples drawn for a sentence do).
        data = sorted(self.sets[split], key=len)
        total, tokens = 0.0, 0
        per_batch = max(1, 1024 // k)
        for start in range(0, len(data), per_batch):
            words, lengths = pad_batch(data[start : start + per_batch])
            total += float(model.iw_log_likelihood(words, lengths, k, gen).sum())
            tokens += int(lengths.sum())
        model.train(was_training)
        return {
            f"{split}_iw_nll": -total / len(data),
            f"{split}_iw_ppl": math.exp(-total / tokens),
            "iw_samples": k,
        }

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        return {
            "valid_neg_elbo": valid.get("score"),
            "test_neg_elbo": test.get("score"),
            "test_kl": test.get("kl"),
            "test_active_units": test.get("active_units"),
            "test_mutual_info": test.get("mutual_info"),
            **self.iw,
            "vocab_size": len(self.vocab),
            "unknown_tokens": self.unknown,
        }


def mutual_information(mean: torch.Tensor, log_var: torch.Tensor, gen: torch.Generator) -> float:
    """I_q(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)], q(z) the mixture of the N posteriors."""
    n = mean.shape[0]
    z = mean + (0.5 * log_var).exp() * torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
    log_q_own = gaussian_log_prob(z, mean, log_var)  # (N,)
    log_q_all = gaussian_log_prob(z[:, None, :], mean[None], log_var[None])  # (N, N)
    log_q_aggregate = torch.logsumexp(log_q_all, 1) - math.log(n)
    return float((log_q_own - log_q_aggregate).mean())
