"""Training language models (``rnnlab train --data ptb --model lm``, ``--data ptb-char``).

Zaremba et al.'s regime: the training stream cut into ``batch_size`` columns, read in order in
windows of ``bptt`` tokens, the state carried from one window to the next (detached: truncated
backpropagation) and reset at each epoch. Evaluation reads the valid or test stream the same way
in 10 columns, so every token is predicted once with all its history. Metrics as DESIGN.md defines
them: the NLL per token (``<eos>`` included), perplexity exp(NLL), and bits per character NLL/ln 2
for the character view.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rnnlab.data.text import Corpus, batchify, bptt_windows, read_corpus
from rnnlab.models.lm import LanguageModel
from rnnlab.train.config import RunConfig
from rnnlab.train.loop import Problem

EVAL_COLUMNS = 1  # the whole split as one stream, as DESIGN.md defines perplexity
TEXT_SETS = ("ptb", "ptb-char")


def is_text(data: str, data_dir: str = "") -> bool:
    return data in TEXT_SETS or bool(data_dir)


def load_corpus(data: str, data_dir: str = "") -> tuple[Corpus, bool]:
    """The corpus and whether it is the character view (a name ending in -char)."""
    chars = data.endswith("-char")
    name = data[: -len("-char")] if chars else data
    return read_corpus(name, Path(data_dir) if data_dir else None, chars=chars), chars


class TextProblem(Problem):
    score = "nll"

    def __init__(self, cfg: RunConfig) -> None:
        t = cfg.train
        self.cfg = cfg
        self.corpus, self.chars = load_corpus(t.data, t.data_dir)
        self.model = LanguageModel(cfg.model, len(self.corpus.vocab))
        self.train_columns = batchify(self.corpus.streams["train"], t.batch_size)
        self.state: tuple[torch.Tensor, ...] | None = None

    def train_batches(self, epoch: int) -> Any:
        self.state = None  # each epoch starts from a zero state
        return bptt_windows(self.train_columns, self.cfg.train.bptt)

    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, float, float]:
        inputs, targets = batch
        logits, state = self.model(inputs, self.state)
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
        for inputs, targets in bptt_windows(columns, self.cfg.train.bptt):
            logits, state = model(inputs, state)
            total += float(
                F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
            )
            count += targets.numel()
        model.train(was_training)
        nll = total / count
        extra = {"bpc": nll / math.log(2)} if self.chars else {"ppl": math.exp(min(nll, 700))}
        return {"score": nll, **extra, "tokens": count}

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
