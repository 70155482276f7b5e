"""The sentence VAE (Bowman et al. 2016, ``--model sentence-vae``) and its baseline, a language
model over independent sentences (``--model sentence-lm``, scored by the same code: its KL is 0
and its NLL exact).

The loss per sentence is -log p(w | z) + beta KL(q || p) (beta from ``--kl-schedule`` over
``--kl-anneal`` epochs; with ``--free-bits`` each unit's batch-mean KL counts at least that much);
model selection uses the unweighted negative ELBO per sentence on the validation set. Every
evaluation also reports the collapse diagnostics: KL per sentence, active units (Burda et al. 2016:
units whose posterior mean varies over the data, Cov > 0.01) and the mutual information between x
and z under q (He et al. 2019's estimate, the aggregate posterior taken as the mixture over the
evaluated sentences). After training, the best weights give the importance-weighted NLL per
sentence on the test set with k samples, and the perplexity exp(sum NLL / tokens), tokens
counting every word and each <eos>.

The defaults are the setting measured in docs/results.md (LSTM 512, embeddings 300, z 32,
dropout 0.5, free bits 0.25, KL annealed linearly over 2 epochs, Adam at 1e-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from rnnlab import device as draw
from rnnlab.console import progress
from rnnlab.data.text import encode_sentence, pad_batch, sentence_vocab, sentences
from rnnlab.device import model_device, to_device
from rnnlab.errors import DataError
from rnnlab.families.base import (
    WIDTH,
    Problem,
    RecurrentOptions,
    Score,
    TrainOptions,
    affordable_samples,
    default,
    model_config,
    option,
)
from rnnlab.families.lm import TextFamily, TextOptions, load_corpus
from rnnlab.losses import KL_SCHEDULES, free_bits_kl, gaussian_log_prob, kl_weight
from rnnlab.models.sentence_vae import SentenceVAE

EVAL_SEED, IW_SEED, EVAL_BATCH, DIAGNOSTIC_SENTENCES = 2**40 + 21, 2**40 + 22, 64, 500


@dataclass(frozen=True)
class SentenceLMConfig(TextOptions, RecurrentOptions):
    family: ClassVar[str] = "sentence-lm"
    cell: str = default(RecurrentOptions, "cell", "lstm")
    hidden_size: int = default(RecurrentOptions, "hidden_size", 512)
    dropout: float = default(RecurrentOptions, "dropout", 0.5)
    optimizer: str = default(TrainOptions, "optimizer", "adam")
    lr: float = default(TrainOptions, "lr", 0.001)
    clip: float = default(TrainOptions, "clip", 5.0)
    batch_size: int = default(TrainOptions, "batch_size", 32)
    epochs: int = default(TrainOptions, "epochs", 30)
    patience: int = default(TrainOptions, "patience", 3)
    lr_patience: int = default(TrainOptions, "lr_patience", 1)
    embedding_size: int = option(
        300, "word embedding units (0: the hidden size)", low=0, high=WIDTH
    )
    word_dropout: float = option(0.0, "decoder inputs replaced by <unk> in training", low=0.0,
                                 below=1.0)  # fmt: skip
    max_len: int = option(0, "train on sentences of at most this many words (0: all)", "data",
                          low=0)  # fmt: skip


@dataclass(frozen=True)
class SentenceVAEConfig(SentenceLMConfig):
    family: ClassVar[str] = "sentence-vae"
    z_size: int = option(32, "latent units", positive=True, high=WIDTH)
    latent_every_step: bool = option(False, "z joins every decoder input, not only h_0")
    kl_anneal: int = option(2, "KL annealing length in epochs (0: weight 1 from the start)",
                            "training", low=0)  # fmt: skip
    kl_schedule: str = option("linear", "KL annealing: linear, logistic or cyclical", "training",
                              choices=KL_SCHEDULES)  # fmt: skip
    free_bits: float = option(0.25, "minimum KL per latent unit (nats)", "training", low=0.0)
    iw_samples: int = option(0, "samples k of the importance-weighted test NLL (0: as many as "
                             "cost about one training epoch, at most 100)", "evaluation", low=0,
                             high=10**5)  # fmt: skip


def vae_model_config(cfg: Any, latent: bool) -> Any:
    extra: dict[str, Any] = {"embedding_size": cfg.embedding_size,
                             "word_dropout": cfg.word_dropout}  # fmt: skip
    if latent:
        extra |= {"z_size": cfg.z_size, "latent_every_step": cfg.latent_every_step}
    return model_config(cfg, "sentence-vae" if latent else "sentence-lm", "bernoulli",
                              **extra)  # fmt: skip


class SentenceProblem(Problem):
    def __init__(self, cfg: Any, model: nn.Module | None, vocab: list[str] | None,
                 latent: bool) -> None:  # fmt: skip
        self.cfg = cfg
        self.latent = latent
        corpus, chars = load_corpus(cfg, _corpus_vocab(vocab))
        if chars:
            raise DataError("the sentence models work on words, not characters")
        self.corpus = corpus
        self.vocab = sentence_vocab(corpus)
        self.sets = {split: sentences(corpus, split) for split in ("train", "valid", "test")}
        train = self.sets["train"]
        self.train = [s for s in train if len(s) <= cfg.max_len + 1] if cfg.max_len else train
        if not self.train:
            shortest = min(map(len, train)) - 1
            raise DataError(f"no training sentence has at most --max-len {cfg.max_len} words "
                            f"(the shortest has {shortest}); raise --max-len")  # fmt: skip
        self.model = model or SentenceVAE(vae_model_config(cfg, latent), len(self.vocab))
        self.iw: dict[str, Any] = {}

    def assets(self) -> dict[str, Any]:
        data = {"data": self.cfg.data, "data_dir": self.cfg.data_dir,
                **{f"{k}_sentences": len(v) for k, v in self.sets.items()},
                "unknown_tokens": self.corpus.unknown}  # fmt: skip
        return {"vocab": self.vocab, "data": data}

    def train_batches(self, epoch: int) -> Any:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train), generator=gen).tolist()
        # Buckets of similar length inside each shuffled chunk of 50 batches: little padding.
        chunk = 50 * cfg.batch_size
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: len(self.train[i]))
            batches += [part[i : i + cfg.batch_size] for i in range(0, len(part), cfg.batch_size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        for n, k in enumerate(perm):
            words, lengths = pad_batch([self.train[i] for i in batches[k]])
            yield words, lengths, epoch - 1 + n / len(batches)

    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, float, float]:
        cfg = self.cfg
        words, lengths, progress = batch
        terms = self.model(words, lengths)
        if self.latent:
            beta = kl_weight(cfg.kl_schedule, progress, cfg.kl_anneal)
            kl = free_bits_kl(terms.kl_units, cfg.free_bits) if cfg.free_bits else terms.kl.mean()
            loss = -terms.log_lik.mean() + beta * kl
        else:
            loss = -terms.log_lik.mean()
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
            words, lengths = to_device(pad_batch(data[start : start + EVAL_BATCH]),
                                       model_device(model))  # fmt: skip
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

    def finalise(self) -> None:
        k = getattr(self.cfg, "iw_samples", 1) or affordable_samples(
            sum(len(s) for s in self.train), sum(len(s) for s in self.sets["test"])
        )
        self.iw = self.importance_weighted("test", k)

    @torch.no_grad()
    def importance_weighted(self, split: str, k: int) -> dict[str, Any]:
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
        starts = range(0, len(data), per_batch)
        for start in progress(starts, f"importance-weighted NLL, {split} (k={k})"):
            words, lengths = to_device(pad_batch(data[start : start + per_batch]),
                                       model_device(model))  # fmt: skip
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
            "unknown_tokens": self.corpus.unknown,
        }


def _corpus_vocab(vocab: list[str] | None) -> list[str] | None:
    """The word view's vocabulary (``<eos>``, ``<unk>``, words) from a stored sentence view's."""
    if vocab is None:
        return None
    return ["<eos>", "<unk>", *[w for w in vocab if w not in ("<sos>", "<eos>", "<unk>", "<pad>")]]


def mutual_information(mean: torch.Tensor, log_var: torch.Tensor, gen: torch.Generator) -> float:
    """I_q(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)], q(z) the mixture of the N posteriors."""
    n = mean.shape[0]
    z = mean + (0.5 * log_var).exp() * draw.normal(mean.shape, gen, mean)
    log_q_own = gaussian_log_prob(z, mean, log_var)  # (N,)
    log_q_all = gaussian_log_prob(z[:, None, :], mean[None], log_var[None])  # (N, N)
    log_q_aggregate = torch.logsumexp(log_q_all, 1) - math.log(n)
    return float((log_q_own - log_q_aggregate).mean())


class SentenceLM(TextFamily):
    name = "sentence-lm"
    title = "text: an LM over independent sentences (Bowman et al. 2016's baseline)"
    config_type = SentenceLMConfig
    score = Score("neg_elbo", "NLL", "nats/sentence")
    implied_by_data = False
    latent_model = False

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        model = SentenceVAE(vae_model_config(cfg, self.latent_model), len(assets["vocab"]))
        model.vocab = list(assets["vocab"])  # type: ignore[assignment]
        return model

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        if assets is None:
            return SentenceProblem(cfg, None, None, self.latent_model)
        model = self.build_model(cfg, assets)
        return SentenceProblem(cfg, model, assets["vocab"], self.latent_model)

    def summary(self, result: dict[str, Any], out: Path) -> str:
        iw = result.get("test_iw_nll")
        iw_text = ("n/a" if iw is None else f"{iw:.2f} nats/sentence (k={result['iw_samples']}, "
                   f"ppl {result['test_iw_ppl']:.1f})")  # fmt: skip
        return (
            f"{result['data']} {result['model']}/{result['cell']}: test negative ELBO "
            f"{_f(result.get('test_neg_elbo'))} nats/sentence (a bound), importance-weighted "
            f"test NLL {iw_text}; KL {_f(result.get('test_kl'))}, active units "
            f"{result.get('test_active_units')}, MI {_f(result.get('test_mutual_info'))}; "
            f"{result['num_params']:,} parameters, {result['wall_time_s']:.0f} s; run: {out}"
        )

    def eval_lines(self, split: str, figures: dict[str, Any], data: str) -> list[str]:
        return [f"{data} {split}: negative ELBO {figures['score']:.2f} nats/sentence (one "
                f"posterior sample), KL {figures['kl']:.2f}, active units "
                f"{figures['active_units']}, MI {figures['mutual_info']:.2f}"]  # fmt: skip

    def iw_lines(self, split: str, iw: dict[str, Any], data: str) -> list[str]:
        nll, ppl = iw[f"{split}_iw_nll"], iw[f"{split}_iw_ppl"]
        return [f"{data} {split}: importance-weighted NLL {nll:.2f} nats/sentence, ppl "
                f"{ppl:.2f} (k={iw['iw_samples']})"]  # fmt: skip

    def generate(self, model: nn.Module, assets: dict[str, Any], n: int, temperature: float,
                 top_k: int, seed: int, max_len: int) -> list[str]:  # fmt: skip
        """Sentences decoded from z ~ N(0, I) (the LM: from its zero state)."""
        vocab = assets["vocab"]
        gen = torch.Generator().manual_seed(seed)
        z = draw.normal((n, int(model.z_size)), gen, next(model.parameters()))  # type: ignore[arg-type,call-overload]
        decoded = model.generate(z, max_len=max_len, temperature=temperature, top_k=top_k,  # type: ignore[operator]
                                 generator=gen)  # fmt: skip
        return [" ".join(vocab[i] for i in ids) for ids in decoded]


class SentenceVAEFamily(SentenceLM):
    name = "sentence-vae"
    title = "text: the sentence VAE (Bowman et al. 2016), -ELBO, IW NLL, collapse diagnostics"
    config_type = SentenceVAEConfig
    score = Score("neg_elbo", "-ELBO (bound)", "nats/sentence")
    latent = True
    latent_model = True

    def encode(self, model: nn.Module, assets: dict[str, Any], text: str) -> tuple[Any, int]:
        """A sentence's posterior mean, and how many of its words are not in the vocabulary."""
        ids, unknown = encode_sentence(text, assets["vocab"])
        device = model_device(model)
        mean, _ = model.encode(ids[None].to(device), torch.tensor([len(ids)], device=device))  # type: ignore[operator]
        return mean, unknown


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"
