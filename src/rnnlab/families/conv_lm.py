"""Convolutional language models (``rnnlab train --model tcn-lm`` / ``--model gcnn-lm``, on the
lm family's data: ``ptb``, ``ptb-char``, or a corpus with ``--data-dir``), scored as the lm
family scores: the NLL per token, with bits per character or perplexity beside it, so that
`rnnlab compare` sets them beside ``--model lm`` runs on the same split and metric.

**Windows with context** (Bai et al. 2018's regime, locuslab/TCN ``TCN/char_cnn/utils.py``
``get_batch`` and ``char_cnn_test.py`` ``evaluate``). A stream's columns (``batchify``: the
training stream in ``batch_size`` columns, valid and test as one) are read in windows of
``seq_len`` tokens, each from the zero padding (no state is carried), stepped by
``seq_len - context_len``: the first window's predictions are all scored, every later window's
first ``context_len`` predictions are context only (their targets are masked out) and its last
``seq_len - context_len`` scored. The last window ends at the stream's end and scores what is
left. So every token of the split but the first is predicted exactly once (the count is the
lm family's: N - 1 targets of an N-token stream), each with at least ``context_len`` tokens of
history (or all of it, near the start). Where ``context_len >= R - 1`` (R the receptive field;
true of the defaults) every scored prediction sees its whole receptive field, and the score
equals one pass over the whole split. Bai et al.'s own evaluation scores only the last
``validseqlen`` predictions of every window, the first window's included, and skips a last
window shorter than ``seq_len``: it leaves the split's first 80 and last few tokens unscored.
rnnlab scores them, and trains the same way (the first window fully, the rest past their
context).

**TCN defaults** are Bai et al.'s character PTB setting, as ``TCN/char_cnn/char_cnn_test.py``
(locuslab/TCN) sets them: 3 levels, 450 channels (``--nhid``; the last level of ``--emsize``
channels), kernel 3, embedding 100, dropout 0.1, embedding dropout 0.1 (elementwise, here
``--input-dropout``), ``seq_len`` 400 and ``validseqlen`` 320 (``--context-len`` 80), SGD at
lr 4, gradient norm clipped at 0.15, batch 32, 100 epochs, the decoder tied to the embedding
(``TCN/char_cnn/model.py``). Their schedule divides the LR by 10 when, after epoch 5, the
validation loss is above each of the previous three; here after one epoch without a new best
(the shared plateau rule). Their word PTB setting (``TCN/word_cnn/word_cnn_test.py``): 4 levels
of 600, embedding 600, kernel 3, dropout 0.45, embedding dropout 0.25, clip 0.35, batch 16,
``seq_len`` 80 with ``validseqlen`` 40, SGD at 4, LR halved on plateaus. Published: 1.31 bpc
(char PTB), perplexity 88.68 (word PTB); not verified here.

**GCNN defaults**: a small model for a CPU (4 plain blocks of 256 channels, kernel 4,
embedding 128, dropout 0.1; R = 25 tokens), the same windows as the TCN, Adam at 2e-3 and
Dauphin et al.'s gradient clipping at 0.1 (Sec. 4.2; their Nesterov momentum of 0.99 is not an
optimiser the trainer offers).

Neither has a recurrence: ``--cell``, ``--layer-norm``, ``--bptt``, ``--reset-state``,
``--zoneout`` and the other recurrent options are no fields of these configs, so the command
line refuses them in one line. ``rnnlab generate`` is the lm family's, the model fed a token at
a time with the last R - 1 tokens as its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.data.text import batchify
from rnnlab.device import model_device
from rnnlab.errors import ConfigError
from rnnlab.families.base import (
    LAYERS,
    WIDTH,
    Problem,
    TrainOptions,
    default,
    option,
)
from rnnlab.families.gcnn import GatedBlockOptions
from rnnlab.families.lm import EVAL_COLUMNS, LM, TextOptions, TextProblem, text_figures
from rnnlab.models.conv_lm import ConvLanguageModel, ConvLMConfig

IGNORE = -100  # a target that is context only (F.cross_entropy's ignore_index)


def context_windows(columns: Tensor, seq_len: int, context_len: int) -> list[tuple[Tensor, Tensor]]:
    """Windows of (inputs, targets), each (<= seq_len, B), over columns (N, B) (module
    docstring): targets are the next tokens, those of the context set to ``IGNORE``. Every
    target 1..N-1 of each column is scored in exactly one window.

    >>> for x, y in context_windows(torch.arange(8)[:, None], 4, 2):
    ...     print(x[:, 0].tolist(), y[:, 0].tolist())
    [0, 1, 2, 3] [1, 2, 3, 4]
    [2, 3, 4, 5] [-100, -100, 5, 6]
    [3, 4, 5, 6] [-100, -100, -100, 7]
    """
    n = columns.shape[0] - 1  # input positions 0..n-1 predict tokens 1..n
    stride = seq_len - context_len
    windows = []
    scored_from = 0  # the first input position not yet scored
    while scored_from < n:
        end = min(n, scored_from + (seq_len if scored_from == 0 else stride))
        start = max(0, end - seq_len)
        inputs = columns[start:end]
        targets = columns[start + 1 : end + 1].clone()
        targets[: scored_from - start] = IGNORE
        windows.append((inputs, targets))
        scored_from = end
    return windows


def stack_windows(windows: list[tuple[Tensor, Tensor]],
                  per_batch: int) -> list[tuple[Tensor, Tensor]]:  # fmt: skip
    """Windows of one column side by side, ``per_batch`` at a time (all are ``seq_len`` long
    but where the stream is shorter; windows of another length stay in their own batch)."""
    batches = []
    for i in range(0, len(windows), per_batch):
        group = windows[i : i + per_batch]
        for length in dict.fromkeys(x.shape[0] for x, _ in group):
            same = [(x, y) for x, y in group if x.shape[0] == length]
            batches.append((torch.cat([x for x, _ in same], 1), torch.cat([y for _, y in same], 1)))
    return batches


@dataclass(frozen=True)
class ConvOptions(TextOptions):
    """What the two convolutional language models share."""

    embedding_size: int = option(100, "token embedding units (the last block's width too)",
                                 positive=True, high=WIDTH)  # fmt: skip
    hidden_size: int = option(450, "channels of every block but the last", positive=True,
                              high=WIDTH)  # fmt: skip
    num_layers: int = option(3, "residual blocks (Bai et al.'s levels)", positive=True,
                             high=LAYERS)  # fmt: skip
    kernel_size: int = option(3, "kernel size of every causal convolution", low=2, high=64)
    dropout: float = option(0.1, "dropout after every convolution", low=0.0, below=1.0)
    input_dropout: float = option(0.1, "dropout on the embedded inputs, elementwise (Bai et "
                                  "al.'s --emb_dropout)", low=0.0, below=1.0)  # fmt: skip
    untied: bool = option(False, "a decoder of its own (by default the embedding's, tied as "
                          "Bai et al.'s; Press & Wolf 2017)")  # fmt: skip
    seq_len: int = option(400, "tokens per window, context included (Bai et al.'s --seq_len)",
                          "training", low=2, high=10**6)  # fmt: skip
    context_len: int = option(80, "leading tokens of each window after the first that are "
                              "context only, unscored (Bai et al.'s seq_len - validseqlen)",
                              "training", low=0, high=10**6)  # fmt: skip
    optimizer: str = default(TrainOptions, "optimizer", "sgd")
    lr: float = default(TrainOptions, "lr", 4.0)
    clip: float = default(TrainOptions, "clip", 0.15)
    batch_size: int = default(TrainOptions, "batch_size", 32)
    epochs: int = default(TrainOptions, "epochs", 100)
    lr_decay: float = default(TrainOptions, "lr_decay", 0.1)
    lr_patience: int = default(TrainOptions, "lr_patience", 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.context_len >= self.seq_len:
            raise ConfigError(f"context_len must be below seq_len ({self.seq_len}), got "
                              f"{self.context_len}")  # fmt: skip


@dataclass(frozen=True)
class TCNLMConfig(ConvOptions):
    """Bai et al.'s character PTB TCN (module docstring)."""

    family: ClassVar[str] = "tcn-lm"


@dataclass(frozen=True)
class GCNNLMConfig(ConvOptions, GatedBlockOptions):
    """A small gated convolutional network (Dauphin et al. 2017) for a CPU."""

    family: ClassVar[str] = "gcnn-lm"
    embedding_size: int = default(ConvOptions, "embedding_size", 128)
    hidden_size: int = default(ConvOptions, "hidden_size", 256)
    num_layers: int = default(ConvOptions, "num_layers", 4)
    kernel_size: int = default(ConvOptions, "kernel_size", 4)
    optimizer: str = default(TrainOptions, "optimizer", "adam")
    lr: float = default(TrainOptions, "lr", 2e-3)
    clip: float = default(TrainOptions, "clip", 0.1)
    lr_decay: float = default(TrainOptions, "lr_decay", 0.5)


def conv_config(cfg: Any, kind: str) -> ConvLMConfig:
    return ConvLMConfig(kind=kind, embedding_size=cfg.embedding_size,
                        hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                        kernel_size=cfg.kernel_size, dropout=cfg.dropout,
                        input_dropout=cfg.input_dropout, tied=not cfg.untied,
                        bottleneck=getattr(cfg, "bottleneck", False))  # fmt: skip


class ConvTextProblem(TextProblem):
    """The lm family's corpus, assets and figures; windows with context instead of BPTT."""

    def __init__(self, cfg: Any, kind: str, model: nn.Module | None,
                 vocab: list[str] | None) -> None:  # fmt: skip
        self.kind = kind
        super().__init__(cfg, model, vocab)

    def make_model(self, vocab_size: int) -> nn.Module:
        return ConvLanguageModel(conv_config(self.cfg, self.kind), vocab_size)

    def train_batches(self, epoch: int) -> Any:
        return context_windows(self.train_columns, self.cfg.seq_len, self.cfg.context_len)

    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, float, float]:
        inputs, targets = batch
        logits, _ = self.model(inputs)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                              reduction="sum")  # fmt: skip
        n = int((targets != IGNORE).sum())
        return nll / n, float(nll.detach()), n

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Any]:
        model = self.model
        was_training = model.training
        model.eval()
        columns = batchify(self.corpus.streams[split], EVAL_COLUMNS)
        windows = context_windows(columns, self.cfg.seq_len, self.cfg.context_len)
        total, count = 0.0, 0
        device = model_device(model)
        for inputs, targets in stack_windows(windows, self.cfg.batch_size):
            inputs, targets = inputs.to(device), targets.to(device)
            logits, _ = model(inputs)
            total += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                           ignore_index=IGNORE, reduction="sum"))  # fmt: skip
            count += int((targets != IGNORE).sum())
        model.train(was_training)
        return text_figures(total, count, self.chars)


class ConvLMFamily(LM):
    """A convolutional language model on the lm family's data, score and generation."""

    kind: ClassVar[str]
    implied_by_data = False

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        model = ConvLanguageModel(conv_config(cfg, self.kind), len(assets["vocab"]))
        model.vocab = list(assets["vocab"])  # type: ignore[assignment]
        return model

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        if assets is None:
            return ConvTextProblem(cfg, self.kind, None, None)
        return ConvTextProblem(cfg, self.kind, self.build_model(cfg, assets), assets["vocab"])

    def summary(self, result: dict[str, Any], out: Path) -> str:
        key = "bpc" if "test_bpc" in result else "ppl"
        what = f"{result['data']} {self.name} ({result['num_layers']} x {result['hidden_size']})"
        if result.get("test_" + key) is None:
            return f"{what}: no finished epoch; run: {out}"
        return (
            f"{what}: test {key} {result['test_' + key]:.3f} (NLL {result['test_nll']:.4f} "
            f"nats/token; valid {key} {result['valid_' + key]:.3f}) at the best validation "
            f"epoch {result['best_epoch']}; {result['num_params']:,} parameters, "
            f"{result['wall_time_s']:.0f} s; run: {out}"
        )


class TCNLM(ConvLMFamily):
    name = "tcn-lm"
    title = "language model: a temporal convolutional network (Bai et al. 2018), windows"
    config_type = TCNLMConfig
    kind = "tcn"


class GCNNLM(ConvLMFamily):
    name = "gcnn-lm"
    title = "language model: a gated convolutional network (Dauphin et al. 2017), windows"
    config_type = GCNNLMConfig
    kind = "gcnn"
