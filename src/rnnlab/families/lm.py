"""Language models (``rnnlab train --data ptb``, ``--data ptb-char``).

Zaremba et al.'s regime: the training stream cut into ``batch_size`` columns, read in order in
windows of ``bptt`` tokens, the state carried from one window to the next (detached: truncated
backpropagation) and reset at each epoch. Evaluation reads the valid or test stream the same way
as one column, so every token is predicted once with all its history. Metrics as DESIGN.md
defines them: the NLL per token (``<eos>`` included), perplexity exp(NLL), and bits per character
NLL/ln 2 for the character view. The defaults are Zaremba et al.'s small model (2 x 200 LSTM, no
dropout, SGD at 20 with mean-loss scaling, halved every epoch after the 4th, 13 epochs).

The run directory keeps the vocabulary (assets.json), so a trained model generates text without
the corpus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab import device as draw
from rnnlab.data.text import Corpus, batchify, bptt_windows, read_corpus
from rnnlab.device import model_device
from rnnlab.errors import RunDirError
from rnnlab.families.base import (
    WIDTH,
    Family,
    Problem,
    RecurrentOptions,
    Score,
    TrainOptions,
    default,
    model_config,
    option,
)
from rnnlab.models.lm import LanguageModel

EVAL_COLUMNS = 1  # the whole split as one stream, as DESIGN.md defines perplexity
TEXT_SETS = ("ptb", "ptb-char")


@dataclass(frozen=True)
class TextOptions(TrainOptions):
    data: str = option("ptb", "a corpus: ptb, ptb-char (characters), or NAME with --data-dir "
                       "(NAME.train.txt, .valid.txt, .test.txt)", "data")  # fmt: skip
    data_dir: str = option("", "the corpus directory (else $RNNLAB_DATA/NAME, the cache)", "data")


@dataclass(frozen=True)
class LMConfig(TextOptions, RecurrentOptions):
    family: ClassVar[str] = "lm"
    cell: str = default(RecurrentOptions, "cell", "lstm")
    num_layers: int = default(RecurrentOptions, "num_layers", 2)
    dropout: float = default(RecurrentOptions, "dropout", 0.0)
    optimizer: str = default(TrainOptions, "optimizer", "sgd")
    lr: float = default(TrainOptions, "lr", 20.0)
    clip: float = default(TrainOptions, "clip", 0.25)
    batch_size: int = default(TrainOptions, "batch_size", 20)
    epochs: int = default(TrainOptions, "epochs", 13)
    lr_decay_start: int = default(TrainOptions, "lr_decay_start", 4)
    bptt: int = option(20, "truncated BPTT window (tokens)", "training", positive=True, high=10**6)
    embedding_size: int = option(0, "word embedding units (0: the hidden size)", low=0, high=WIDTH)
    tied: bool = option(False, "tie the output layer to the embedding (Press & Wolf 2017)")
    variational: bool = option(False, "one dropout mask per sequence (Gal & Ghahramani 2016)")
    embedding_dropout: float = option(0.0, "drop whole words from the embedding", low=0.0,
                                      below=1.0)  # fmt: skip
    weight_drop: float = option(0.0, "DropConnect on the recurrent weights (Merity et al. 2017)",
                                low=0.0, below=1.0)  # fmt: skip
    init: float = option(0.1, "every weight uniform in [-init, init] (0: each module's own)",
                         low=0.0)  # fmt: skip
    reset_state: bool = option(
        False,
        "start every BPTT window from a zero state, in training and evaluation (non-overlapping "
        "subsequences, as Cooijmans et al. 2017's character PTB), instead of carrying it",
        "training",
    )


def load_corpus(cfg: Any, vocab: list[str] | None = None) -> tuple[Corpus, bool]:
    """The corpus of a text config and whether it is the character view (a name ending in
    -char); with ``vocab`` (a run directory's), ids follow that stored vocabulary, and a missing
    corpus is an error rather than a download: evaluating a run never fetches anything."""
    chars = cfg.data.endswith("-char")
    name = cfg.data[: -len("-char")] if chars else cfg.data
    directory = Path(cfg.data_dir) if cfg.data_dir else None
    return read_corpus(name, directory, chars=chars, vocab=vocab, download=vocab is None), chars


def describe_corpus(cfg: Any, corpus: Corpus) -> dict[str, Any]:
    return {"data": cfg.data, "data_dir": cfg.data_dir,
            **{f"{k}_tokens": int(v.numel()) for k, v in corpus.streams.items()},
            "unknown_tokens": corpus.unknown}  # fmt: skip


class TextProblem(Problem):
    """Zaremba's columns and BPTT windows over a corpus; ``cfg`` an ``LMConfig`` (or, for the
    convolutional families' subclass, a config with the text options)."""

    def __init__(self, cfg: Any, model: nn.Module | None, vocab: list[str] | None) -> None:
        self.cfg = cfg
        self.corpus, self.chars = load_corpus(cfg, vocab)
        self.model = model if model is not None else self.make_model(len(self.corpus.vocab))
        self.train_columns = batchify(self.corpus.streams["train"], cfg.batch_size)
        self.state: tuple[torch.Tensor, ...] | None = None

    def make_model(self, vocab_size: int) -> nn.Module:
        """A fresh model for the corpus (the convolutional families build theirs here)."""
        return LanguageModel(model_config(self.cfg, "lm", "bernoulli", **lm_fields(self.cfg)),
                             vocab_size)  # fmt: skip

    def assets(self) -> dict[str, Any]:
        return {"vocab": self.corpus.vocab, "chars": self.chars,
                "data": describe_corpus(self.cfg, self.corpus)}  # fmt: skip

    def train_batches(self, epoch: int) -> Any:
        self.state = None  # each epoch starts from a zero state
        return bptt_windows(self.train_columns, self.cfg.bptt)

    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, float, float]:
        inputs, targets = batch
        logits, state = self.model(inputs, None if self.cfg.reset_state else self.state)
        self.state = tuple(s.detach() for s in state)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        n = targets.numel()
        return nll / n, float(nll.detach()), n

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Any]:
        model = self.model
        was_training = model.training
        model.eval()
        columns = batchify(self.corpus.streams[split], EVAL_COLUMNS)
        state, total, count = None, 0.0, 0
        device = model_device(model)
        for inputs, targets in bptt_windows(columns, self.cfg.bptt):
            inputs, targets = inputs.to(device), targets.to(device)
            logits, state = model(inputs, None if self.cfg.reset_state else state)
            total += float(
                F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
            )
            count += targets.numel()
        model.train(was_training)
        return text_figures(total, count, self.chars)

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        key = "bpc" if self.chars else "ppl"
        return {
            "valid_nll": valid.get("score"),
            "test_nll": test.get("score"),
            f"valid_{key}": valid.get(key),
            f"test_{key}": test.get(key),
            "vocab_size": len(self.corpus.vocab),
            "unknown_tokens": self.corpus.unknown,
        }


def text_figures(total: float, count: int, chars: bool) -> dict[str, Any]:
    """A split's figures from its summed NLL over ``count`` tokens: the NLL per token (the
    score), and bits per character NLL / ln 2 (characters) or perplexity exp(NLL) (words).

    >>> text_figures(2 * math.log(2), 2, chars=True)
    {'score': 0.6931471805599453, 'bpc': 1.0, 'tokens': 2}
    """
    nll = total / count
    extra = {"bpc": nll / math.log(2)} if chars else {"ppl": math.exp(min(nll, 700))}
    return {"score": nll, **extra, "tokens": count}


def lm_fields(cfg: Any) -> dict[str, Any]:
    names = ("embedding_size", "tied", "variational", "embedding_dropout", "weight_drop", "init")
    return {k: getattr(cfg, k) for k in names}


class TextFamily(Family):
    """What the text families share: the corpus as data, generation with temperature and top-k."""

    draws = "text"

    def accepts(self, data: str, options: dict[str, Any]) -> bool:
        return data in TEXT_SETS or bool(options.get("data_dir"))

    def data_help(self) -> str:
        return "ptb, ptb-char, or a corpus NAME with --data-dir DIR"

    def known_data(self) -> list[str]:
        return list(TEXT_SETS)


class LM(TextFamily):
    name = "lm"
    title = "language model on words or characters (Zaremba et al. 2014, AWD-style regularisers)"
    config_type: ClassVar[type[Any]] = LMConfig
    score = Score("nll", "NLL", "nats/token")

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        model_cfg = model_config(cfg, "lm", "bernoulli", **lm_fields(cfg))
        model = LanguageModel(model_cfg, len(assets["vocab"]))
        model.vocab = list(assets["vocab"])  # type: ignore[assignment]
        return model

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        if assets is None:
            return TextProblem(cfg, None, None)
        return TextProblem(cfg, self.build_model(cfg, assets), assets["vocab"])

    def summary(self, result: dict[str, Any], out: Path) -> str:
        key = "bpc" if "test_bpc" in result else "ppl"
        if result.get("test_" + key) is None:
            return f"{result['data']} lm/{result['cell']}: no finished epoch; run: {out}"
        return (
            f"{result['data']} lm/{result['cell']}: test {key} {result['test_' + key]:.3f} "
            f"(NLL {result['test_nll']:.4f} nats/token; valid {key} {result['valid_' + key]:.3f})"
            f" at the best validation epoch {result['best_epoch']}; {result['num_params']:,} "
            f"parameters, {result['wall_time_s']:.0f} s; run: {out}"
        )

    def eval_lines(self, split: str, figures: dict[str, Any], data: str) -> list[str]:
        key = "bpc" if "bpc" in figures else "ppl"
        return [f"{data} {split}: {key} {figures[key]:.3f}, NLL {figures['score']:.4f} "
                f"nats/token over {figures['tokens']} tokens"]  # fmt: skip

    def generate(self, model: nn.Module, assets: dict[str, Any], n: int, temperature: float,
                 top_k: int, seed: int, max_len: int) -> list[str]:  # fmt: skip
        """``n`` lines drawn from the model, each from a zero state after ``<eos>`` (the token
        that ends every line), until the next ``<eos>`` or ``max_len`` tokens."""
        vocab: list[str] = assets["vocab"]
        chars = bool(assets.get("chars"))
        gen = torch.Generator().manual_seed(seed)
        if not isinstance(vocab, list) or "<eos>" not in vocab or len(set(vocab)) != len(vocab):
            raise RunDirError("assets.json: the vocabulary must be a list of distinct words "
                              "holding <eos>; this run's is damaged")  # fmt: skip
        eos = vocab.index("<eos>")
        lines = []
        for ids in sample_tokens(model, eos, n, temperature, top_k, gen, max_len):
            words = [vocab[i] for i in ids]
            lines.append("".join(" " if w == "_" else w for w in words) if chars
                         else " ".join(words))  # fmt: skip
        return lines


@torch.no_grad()
def sample_tokens(model: nn.Module, start: int, n: int, temperature: float, top_k: int,
                  gen: torch.Generator, max_len: int) -> list[list[int]]:  # fmt: skip
    """Ancestral sampling of ``n`` sequences in parallel, from a zero state fed ``start``:
    greedy when temperature is 0, else from softmax(logits / temperature), restricted to the
    ``top_k`` likeliest tokens when top_k > 0. Each stops at the next ``start`` token."""
    model.eval()
    token = torch.full((1, n), start, dtype=torch.long, device=model_device(model))
    state = None
    out: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_len):
        logits, state = model(token, state)
        token = pick(logits[-1], temperature, top_k, gen)[None]  # (1, n)
        for b in range(n):
            if not done[b]:
                if int(token[0, b]) == start:
                    done[b] = True
                else:
                    out[b].append(int(token[0, b]))
        if bool(done.all()):
            break
    return out


def pick(logits: torch.Tensor, temperature: float, top_k: int,
         gen: torch.Generator) -> torch.Tensor:  # fmt: skip
    """(B, V) logits -> (B,) token ids (greedy at temperature 0)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    return draw.categorical(logits.softmax(-1), gen)[:, 0]
