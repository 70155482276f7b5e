"""Long-time-lag tasks: Hochreiter & Schmidhuber (1997) and their modern forms.

Every task is a seeded generator of input sequences and targets, with its loss, its metric, the
value a trivial predictor gets, and a ``solved`` criterion (the paper's own where it has one).

Targets come in four kinds, one per output head (``rnnlab.heads``):
  ``regression``  one real value after the last step (MSE)
  ``class``       one class after the last step (cross-entropy)
  ``steps``       a class at every step, -1 where a step has no target (cross-entropy)
  ``multilabel``  a set of classes at every step (Bernoulli), for the embedded Reber grammar

Sequences of one batch may have different lengths (Hochreiter's lengths are random): ``lengths``
gives each one, and the inputs are zero beyond it.

>>> task = make_task("adding", seq_len=50)
>>> data = task.generate(4, torch.Generator().manual_seed(0))
>>> tuple(data.x.shape), tuple(data.target.shape)
((4, 50, 2), (4,))
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.errors import ConfigError, unknown_name

KINDS = ("regression", "class", "steps", "multilabel")


@dataclass(frozen=True)
class TaskData:
    """x (N, T, I) inputs, zero beyond each length; lengths (N,); target: (N,) float for
    regression, (N,) long for class, (N, T) long with -1 for no target for steps, (N, T, K) 0/1
    float with ``mask`` (N, T) bool for multilabel."""

    x: Tensor
    target: Tensor
    lengths: Tensor
    mask: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def slice(self, start: int, stop: int) -> TaskData:
        """Sequences start..stop, cut to the longest of them."""
        lengths = self.lengths[start:stop]
        T = int(lengths.max()) if len(lengths) else 0
        target = self.target[start:stop]
        if target.dim() >= 2:
            target = target[:, :T]
        mask = None if self.mask is None else self.mask[start:stop, :T]
        return TaskData(self.x[start:stop, :T], target, lengths, mask)


@dataclass(frozen=True)
class Baseline:
    """What a predictor without memory of the past gets: ``loss`` in the task's loss (None where
    no closed form is given), ``metric`` in its metric; ``how`` says which predictor it is."""

    loss: float | None
    metric: float
    how: str


class Task(ABC):
    """A long-time-lag task. Subclasses set the class attributes and write ``generate``."""

    name: str
    kind: str
    metric_name: str  # the metric reported beside the loss
    higher_is_better: bool  # for the metric
    default_len: int
    reference: str  # the paper and experiment it follows

    def __init__(self, seq_len: int = 0, delay: int = 0) -> None:
        self.seq_len = seq_len or self.default_len
        if self.seq_len < self.min_len:
            raise ConfigError(f"task {self.name!r} needs --seq-len >= {self.min_len}")
        self.delay = delay

    min_len: int = 2

    @property
    @abstractmethod
    def input_size(self) -> int: ...

    @property
    @abstractmethod
    def output_size(self) -> int: ...

    @abstractmethod
    def generate(self, n: int, generator: torch.Generator) -> TaskData:
        """``n`` fresh sequences, a function of the generator's state only."""

    @abstractmethod
    def baseline(self) -> Baseline: ...

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "seq_len": self.seq_len, "kind": self.kind}

    # --- loss and metrics on the outputs of a model -----------------------------------------------
    def loss(self, out: Tensor, data: TaskData) -> Tensor:
        """The training loss: mean over sequences (regression, class) or over targeted steps."""
        total, count = self.loss_sum(out, data)
        return total / count

    def loss_sum(self, out: Tensor, data: TaskData) -> tuple[Tensor, int]:
        """The loss summed over its terms, and their number (chunks of a test set add up)."""
        if self.kind == "regression":
            return F.mse_loss(out, data.target, reduction="sum"), out.numel()
        if self.kind == "class":
            return F.cross_entropy(out, data.target, reduction="sum"), out.shape[0]
        if self.kind == "steps":
            target = data.target.flatten()
            total = F.cross_entropy(out.flatten(0, 1), target, ignore_index=-1, reduction="sum")
            return total, int((target >= 0).sum())
        assert data.mask is not None
        bce = F.binary_cross_entropy_with_logits(out, data.target, reduction="none").sum(-1)
        return bce[data.mask].sum(), int(data.mask.sum())

    def correct(self, out: Tensor, data: TaskData) -> Tensor:
        """(N,) bool: the sequences the model gets right by the task's own criterion."""
        if self.kind == "class":
            return out.argmax(-1) == data.target
        if self.kind == "steps":
            has = data.target >= 0
            right = (out.argmax(-1) == data.target) | ~has
            return right.all(dim=1)
        raise NotImplementedError

    def metrics(self, out: Tensor, data: TaskData) -> dict[str, float]:
        """Sums over the sequences of ``data`` (so chunks add up)."""
        total, terms = self.loss_sum(out, data)
        return {
            "loss_sum": float(total.double()),
            "terms": float(terms),
            "correct": float(self.correct(out, data).sum()),
            "count": float(len(data)),
        }

    def summarise(self, sums: dict[str, float]) -> dict[str, float]:
        """From summed metrics to the reported ones: loss, the metric, wrong (sequences)."""
        n = sums["count"]
        return {
            "loss": sums["loss_sum"] / sums["terms"],
            self.metric_name: sums["correct"] / n,
            "wrong": n - sums["correct"],
            "count": n,
        }

    def solved(self, summary: dict[str, float]) -> bool:
        """Every sequence right (the default; tasks with the paper's own criterion override)."""
        return summary["wrong"] == 0

    def stop(self, summary: dict[str, float]) -> bool:
        """Whether training may stop, judged on the validation set: solved, by default."""
        return self.solved(summary)


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def _lengths(n: int, T: int, spread: int, gen: torch.Generator) -> Tensor:
    """Hochreiter's random lengths: uniform integers in [T, T + spread]."""
    return T + torch.randint(0, spread + 1, (n,), generator=gen)


# --- the modern forms (Bai et al. 2018; Arjovsky et al. 2016) -----------------------------------
class Adding(Task):
    """Two rows: values uniform in [0, 1] and a marker row with exactly two ones, at two distinct
    positions anywhere in the sequence; the target is the sum of the two marked values. Fixed
    length T, MSE; the accuracy counts the sequences with an absolute error below 0.04 (as in
    Hochreiter's form). Predicting 1 always gives E[(X1 + X2 - 1)^2] = Var(X1 + X2) = 1/6 (the
    papers round it to 0.167; some quote 0.1767)."""

    name, kind, metric_name, higher_is_better = "adding", "regression", "accuracy", True
    default_len, reference = 600, "Bai et al. 2018 (adding problem); Arjovsky et al. 2016"
    threshold = 1e-4  # rnnlab's criterion for this form (no paper defines one): test MSE

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 1

    def generate(self, n: int, generator: torch.Generator) -> TaskData:
        T = self.seq_len
        values = torch.rand(n, T, generator=generator)
        # Two distinct positions: the first uniform, the second uniform among the others.
        first = torch.randint(0, T, (n,), generator=generator)
        second = (first + 1 + torch.randint(0, T - 1, (n,), generator=generator)) % T
        markers = torch.zeros(n, T)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = values[rows, first] + values[rows, second]
        x = torch.stack([values, markers], dim=-1)
        return TaskData(x, target, torch.full((n,), T))

    def correct(self, out: Tensor, data: TaskData) -> Tensor:
        return (out - data.target).abs() < 0.04

    def baseline(self) -> Baseline:
        return Baseline(1 / 6, 0.08 * (1 - 0.02), "predict 1: MSE = Var(X1 + X2) = 1/6")

    def solved(self, summary: dict[str, float]) -> bool:
        return summary["loss"] <= self.threshold

    def stop(self, summary: dict[str, float]) -> bool:
        """Half the threshold on the validation set: a margin for the test set's own noise."""
        return summary["loss"] <= self.threshold / 2


class CopyMemory(Task):
    """Ten symbols from 1..8, then T - 1 blanks (0), the delimiter 9, and ten more blanks; the
    target is blank for T + 10 steps and then the ten symbols. Cross-entropy over all T + 20 steps.
    Guessing blanks and then uniformly among the eight symbols gives 10 ln 8 / (T + 20)."""

    name, kind, metric_name, higher_is_better = "copy", "steps", "sequence_accuracy", True
    default_len, reference = 1000, "Bai et al. 2018 (copy memory); Arjovsky et al. 2016"
    threshold = 1e-3  # rnnlab's criterion for this form: test loss
    symbols, length = 8, 10

    @property
    def input_size(self) -> int:
        return self.symbols + 2  # blank, 8 symbols, delimiter

    @property
    def output_size(self) -> int:
        return self.symbols + 2

    def generate(self, n: int, generator: torch.Generator) -> TaskData:
        T, K = self.seq_len, self.length
        total = T + 2 * K
        seq = torch.randint(1, self.symbols + 1, (n, K), generator=generator)
        inputs = torch.zeros(n, total, dtype=torch.long)
        inputs[:, :K] = seq
        inputs[:, T + K - 1] = self.symbols + 1  # the delimiter
        target = torch.zeros(n, total, dtype=torch.long)
        target[:, -K:] = seq
        x = F.one_hot(inputs, self.input_size).float()
        return TaskData(x, target, torch.full((n,), total))

    def baseline(self) -> Baseline:
        loss = self.length * math.log(self.symbols) / (self.seq_len + 2 * self.length)
        return Baseline(loss, self.symbols**-self.length, "blanks, then uniform over 8 symbols")

    def solved(self, summary: dict[str, float]) -> bool:
        return summary["loss"] <= self.threshold

    def stop(self, summary: dict[str, float]) -> bool:
        return summary["loss"] <= self.threshold / 2


class DelayedRecall(Task):
    """Random symbols (one-hot, 8 classes, independent and uniform) at every step; at step t >= k
    the target is the symbol seen k steps earlier (k = ``--delay``). Cross-entropy and accuracy
    over the targeted steps; chance is ln 8 and 1/8. Measures how many steps back a cell can hold
    unstructured information."""

    name, kind, metric_name, higher_is_better = "recall", "steps", "step_accuracy", True
    default_len, reference = 100, "rnnlab (delayed recall of unstructured input)"
    classes = 8

    def __init__(self, seq_len: int = 0, delay: int = 0) -> None:
        super().__init__(seq_len, delay or 10)
        if not 0 <= self.delay < self.seq_len:
            raise ConfigError(f"recall needs 0 <= --delay < --seq-len, got {self.delay}")

    @property
    def input_size(self) -> int:
        return self.classes

    @property
    def output_size(self) -> int:
        return self.classes

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"delay": self.delay}

    def generate(self, n: int, generator: torch.Generator) -> TaskData:
        T, k = self.seq_len, self.delay
        symbols = torch.randint(0, self.classes, (n, T), generator=generator)
        target = torch.full((n, T), -1, dtype=torch.long)
        target[:, k:] = symbols[:, : T - k]
        return TaskData(F.one_hot(symbols, self.classes).float(), target, torch.full((n,), T))

    def metrics(self, out: Tensor, data: TaskData) -> dict[str, float]:
        sums = super().metrics(out, data)
        has = data.target >= 0
        sums["steps_right"] = float(((out.argmax(-1) == data.target) & has).sum())
        sums["steps"] = float(has.sum())
        return sums

    def summarise(self, sums: dict[str, float]) -> dict[str, float]:
        summary = super().summarise(sums)
        summary[self.metric_name] = sums["steps_right"] / sums["steps"]
        summary["wrong"] = sums["count"] - sums["correct"]
        return summary

    def baseline(self) -> Baseline:
        return Baseline(math.log(self.classes), 1 / self.classes, "uniform guess")

    def solved(self, summary: dict[str, float]) -> bool:
        return summary[self.metric_name] >= 0.99


# --- Hochreiter & Schmidhuber 1997 --------------------------------------------------------------
class HochreiterAdding(Task):
    """Exp. 4. Pairs (value uniform in [-1, 1], marker). One of the first ten pairs is marked 1
    (its value X1), then one of the first T/2 - 1 still unmarked pairs (X2); the first and last
    pairs are marked -1 unless marked 1 (in the rare case that the first pair is marked 1, its
    value is set to 0). Lengths uniform in
    [T, T + T/10]. Target 0.5 + (X1 + X2)/4 at the end; a sequence is right when its absolute error
    is below 0.04. Solved (their stopping rule, on the test set): MSE below 0.01 and at most 0.2%
    of the 2560 test sequences wrong (Table 7 reports 0 to 1 wrong)."""

    name, kind, metric_name, higher_is_better = "hs-adding", "regression", "accuracy", True
    default_len, reference = 100, "Hochreiter & Schmidhuber 1997, Exp. 4 (Table 7)"
    min_len = 22  # two marks in distinct places among the first T/2 - 1
    low, high = -1.0, 1.0

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 1

    def _marks(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        T = self.seq_len
        lengths = _lengths(n, T, T // 10, gen)
        Tmax = int(lengths.max())
        values = _uniform((n, Tmax), self.low, self.high, gen)
        values = values * (torch.arange(Tmax)[None, :] < lengths[:, None])
        first = torch.randint(0, 10, (n,), generator=gen)
        # "one of the first T/2 - 1 still unmarked pairs": uniform over T/2 - 2 choices.
        span = T // 2 - 1
        pick = torch.randint(0, span - 1, (n,), generator=gen)
        second = pick + (pick >= first).long()
        markers = torch.zeros(n, Tmax)
        rows = torch.arange(n)
        markers[rows, 0] = -1.0
        markers[rows, lengths - 1] = -1.0
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        return values, markers, lengths, torch.stack([first, second], 1)

    def generate(self, n: int, generator: torch.Generator) -> TaskData:
        values, markers, lengths, marks = self._marks(n, generator)
        rows = torch.arange(n)
        first_marked = (marks == 0).any(1)  # either mark may land on the first pair
        values[rows, 0] = torch.where(first_marked, 0.0, values[rows, 0])  # then its value is 0
        x1, x2 = values[rows, marks[:, 0]], values[rows, marks[:, 1]]
        target = self._target(x1, x2)
        return TaskData(torch.stack([values, markers], -1), target, lengths)

    def _target(self, x1: Tensor, x2: Tensor) -> Tensor:
        return 0.5 + (x1 + x2) / 4.0

    def correct(self, out: Tensor, data: TaskData) -> Tensor:
        return (out - data.target).abs() < 0.04

    def first_marked(self) -> float:
        """The probability that one of the marks lands on the first pair: the first mark there
        (1/10), or the second one (1 of T/2 - 2 places) when the first is elsewhere."""
        return 0.1 + 0.9 / (self.seq_len // 2 - 2)

    def baseline(self) -> Baseline:
        # Predicting 0.5: MSE = Var(X1 + X2)/16, with Var = 2/3, or 1/3 when the first pair is
        # marked (its value is 0). Right when |X1 + X2| < 0.16: for the triangular density
        # (2 - |s|)/4 that is 2 (0.16 * 2 - 0.16^2 / 2)/4; for a single uniform value, 0.16.
        p0 = self.first_marked()
        mse = ((1 - p0) * 2 / 3 + p0 / 3) / 16
        right = (1 - p0) * 2 * (0.16 * 2 - 0.16**2 / 2) / 4 + p0 * 0.16
        return Baseline(mse, right, "predict 0.5")

    def solved(self, summary: dict[str, float]) -> bool:
        return summary["loss"] < 0.01 and summary["wrong"] <= 0.002 * summary["count"]

    def stop(self, summary: dict[str, float]) -> bool:
        """Their stopping rule: error below 0.01 and every recent sequence right (here: every
        validation sequence), stricter than the 0.2% of the test criterion."""
        return summary["loss"] < 0.01 and summary["wrong"] == 0


class HochreiterMultiplication(HochreiterAdding):
    """Exp. 5: as Exp. 4 with values uniform in [0, 1] and the target X1 * X2 (if the first pair is
    marked, its value is set to 1). Right when the absolute error is below 0.04; solved as
    Exp. 4."""

    name, reference = "hs-multiplication", "Hochreiter & Schmidhuber 1997, Exp. 5 (Table 8)"
    low, high = 0.0, 1.0

    def generate(self, n: int, generator: torch.Generator) -> TaskData:
        values, markers, lengths, marks = self._marks(n, generator)
        rows = torch.arange(n)
        first_marked = (marks == 0).any(1)
        values[rows, 0] = torch.where(first_marked, 1.0, values[rows, 0])  # then its value is 1
        target = values[rows, marks[:, 0]] * values[rows, marks[:, 1]]
        return TaskData(torch.stack([values, markers], -1), target, lengths)

    def baseline(self) -> Baseline:
        # Predicting 1/4: when no mark is on the first pair, MSE = Var(X1 X2) = 1/9 - 1/16 and
        # the answer is right when 0.21 < X1 X2 < 0.29, with P(X1 X2 < a) = a - a ln a; when the
        # first pair is marked (its value is 1) the target is X2: MSE = 1/12 + (1/4)^2, right
        # with probability 0.08.
        def cdf(a: float) -> float:
            return a - a * math.log(a)

        p0 = self.first_marked()
        mse = (1 - p0) * (1 / 9 - 1 / 16) + p0 * (1 / 12 + 1 / 16)
        right = (1 - p0) * (cdf(0.29) - cdf(0.21)) + p0 * 0.08
        return Baseline(mse, right, "predict 1/4")


class TemporalOrder(Task):
    """Exp. 6a (``order``, 4 classes) and 6b (``order3``, 8 classes). Symbols a, b, c, d (noise),
    B and E (start and end), X and Y (the relevant ones), one-hot. Sequences start with B and end
    with E; X or Y stand at random times t1 in [10, 20] and t2 in [50, 60] (6b: t1 in [10, 20],
    t2 in [33, 43], t3 in [66, 76]); every other symbol is one of a, b, c, d. Lengths uniform in
    [100, 110]. The class is the order (XX, XY, YX, YY; 6b the eight orders of three). Right when
    every output is within 0.3 of its target (softmax: the true class above 0.7); solved: at most
    0.2% of the test sequences wrong (Table 9 reports 1 and 2 of 2560)."""

    name, kind, metric_name, higher_is_better = "order", "class", "accuracy", True
    default_len, reference = 100, "Hochreiter & Schmidhuber 1997, Exp. 6a (Table 9)"
    windows: tuple[tuple[int, int], ...] = ((10, 20), (50, 60))
    min_len = 100

    def __init__(self, seq_len: int = 0, delay: int = 0) -> None:
        super().__init__(seq_len, delay)
        if self.seq_len != self.default_len:
            raise ConfigError(f"task {self.name!r} has Hochreiter's fixed length 100 to 110")

    @property
    def input_size(self) -> int:
        return 8  # a b c d B E X Y

    @property
    def output_size(self) -> int:
        return 2 ** len(self.windows)

    def generate(self, n: int, generator: torch.Generator) -> TaskData:
        lengths = _lengths(n, 100, 10, generator)
        Tmax = int(lengths.max())
        symbols = torch.randint(0, 4, (n, Tmax), generator=generator)
        rows = torch.arange(n)
        symbols[:, 0] = 4  # B
        label = torch.zeros(n, dtype=torch.long)
        for lo, hi in self.windows:
            t = torch.randint(lo, hi + 1, (n,), generator=generator)
            xy = torch.randint(0, 2, (n,), generator=generator)  # 0: X, 1: Y
            symbols[rows, t] = 6 + xy
            label = label * 2 + xy
        symbols[rows, lengths - 1] = 5  # E
        inside = torch.arange(Tmax)[None, :, None] < lengths[:, None, None]
        return TaskData(F.one_hot(symbols, 8).float() * inside, label, lengths)

    def correct(self, out: Tensor, data: TaskData) -> Tensor:
        p = out.softmax(-1)
        return p.gather(1, data.target[:, None])[:, 0] > 0.7

    def baseline(self) -> Baseline:
        k = self.output_size
        return Baseline(math.log(k), 0.0, f"uniform over {k} classes (p = 1/{k} < 0.7: none right)")

    def solved(self, summary: dict[str, float]) -> bool:
        return summary["wrong"] <= 0.002 * summary["count"]

    def stop(self, summary: dict[str, float]) -> bool:
        return summary["wrong"] == 0  # their rule: the recent sequences all right


class TemporalOrder3(TemporalOrder):
    name, reference = "order3", "Hochreiter & Schmidhuber 1997, Exp. 6b (Table 9)"
    windows = ((10, 20), (33, 43), (66, 76))


class NoiseFreeLags(Task):
    """Exp. 2a: p + 1 symbols; two kinds of sequence, (y, a1, ..., a_{p-1}, y) and
    (x, a1, ..., a_{p-1}, x), equally likely; one-hot input; the target at each step is the next
    symbol. Only the last one needs memory (of the first). Right when every next symbol is predicted
    (the last one is the test); solved when every test sequence is right. T = p + 1 (p = 100)."""

    name, kind, metric_name, higher_is_better = "lags", "steps", "sequence_accuracy", True
    default_len, reference = 101, "Hochreiter & Schmidhuber 1997, Exp. 2a"
    min_len = 3

    @property
    def input_size(self) -> int:
        return self.seq_len  # p + 1 symbols: x, y, a1..a_{p-1} -> p - 1 + 2 = p + 1 = T

    @property
    def output_size(self) -> int:
        return self.seq_len

    def generate(self, n: int, generator: torch.Generator) -> TaskData:
        T = self.seq_len  # symbols: 0 = x, 1 = y, 1 + i = a_i (i = 1..T-2)
        first = torch.randint(0, 2, (n,), generator=generator)
        seq = torch.empty(n, T, dtype=torch.long)
        seq[:, 0] = first
        seq[:, 1 : T - 1] = torch.arange(2, T)[None, :]
        seq[:, T - 1] = first
        target = torch.full((n, T), -1, dtype=torch.long)
        target[:, : T - 1] = seq[:, 1:]
        return TaskData(F.one_hot(seq, T).float(), target, torch.full((n,), T))

    def baseline(self) -> Baseline:
        T = self.seq_len
        return Baseline(math.log(2) / (T - 1), 0.5, "all but the last right, the last a coin")


# The embedded Reber grammar (Exp. 1): B, then T or P, a Reber string, the same T or P, then E.
REBER_SYMBOLS = "BTSXPVE"
_REBER = {  # state -> [(symbol, next state)]; state 6 emits E and ends the inner string
    0: [("B", 1)],
    1: [("T", 2), ("P", 3)],
    2: [("S", 2), ("X", 4)],
    3: [("T", 3), ("V", 5)],
    4: [("X", 3), ("S", 6)],
    5: [("P", 4), ("V", 6)],
    6: [("E", -1)],
}


def reber_string(gen: torch.Generator) -> str:
    """One string of the (inner) Reber grammar, each branch taken with probability 1/2."""
    out, state = [], 0
    while state != -1:
        options = _REBER[state]
        k = int(torch.randint(0, len(options), (1,), generator=gen)) if len(options) > 1 else 0
        symbol, state = options[k]
        out.append(symbol)
    return "".join(out)


def embedded_reber_string(gen: torch.Generator) -> str:
    branch = "TP"[int(torch.randint(0, 2, (1,), generator=gen))]
    return "B" + branch + reber_string(gen) + branch + "E"


def reber_next_sets(string: str) -> list[set[str]]:
    """For an embedded Reber string, the set of symbols that may follow each of its symbols
    (computed by walking the grammar, independently of how the string was drawn)."""
    sets: list[set[str]] = [{"T", "P"}, {"B"}]
    state = 0
    for symbol in string[2:-2]:
        state = dict(_REBER[state])[symbol]
        sets.append({s for s, _ in _REBER[state]} if state != -1 else {string[1]})
    sets.append({"E"})
    return sets


class EmbeddedReber(Task):
    """Exp. 1: next-symbol prediction on embedded Reber strings (one-hot, 7 symbols). The target
    at each step is the set of possible next symbols; a string is right when at every step the
    outputs of the possible symbols are the most active ones (Hochreiter & Schmidhuber); solved
    when every test string is right. A predictor that knows the grammar but not the second
    symbol guesses the penultimate prediction: right on half the strings."""

    name, kind, metric_name, higher_is_better = "reber", "multilabel", "sequence_accuracy", True
    default_len, reference = 0, "Hochreiter & Schmidhuber 1997, Exp. 1"
    min_len = 0

    @property
    def input_size(self) -> int:
        return len(REBER_SYMBOLS)

    @property
    def output_size(self) -> int:
        return len(REBER_SYMBOLS)

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "kind": self.kind}

    def generate(self, n: int, generator: torch.Generator) -> TaskData:
        strings = [embedded_reber_string(generator) for _ in range(n)]
        lengths = torch.tensor([len(s) for s in strings])
        Tmax, K = int(lengths.max()), len(REBER_SYMBOLS)
        x = torch.zeros(n, Tmax, K)
        target = torch.zeros(n, Tmax, K)
        mask = torch.zeros(n, Tmax, dtype=torch.bool)
        for b, s in enumerate(strings):
            for t, (symbol, nxt) in enumerate(zip(s, reber_next_sets(s), strict=False)):
                x[b, t, REBER_SYMBOLS.index(symbol)] = 1.0
                for m in nxt:
                    target[b, t, REBER_SYMBOLS.index(m)] = 1.0
                mask[b, t] = t < len(s) - 1  # the final E has no next symbol
            x[b, len(s) - 1, REBER_SYMBOLS.index("E")] = 1.0
        return TaskData(x, target, lengths, mask)

    def correct(self, out: Tensor, data: TaskData) -> Tensor:
        assert data.mask is not None
        possible = data.target > 0
        lowest_possible = torch.where(possible, out, math.inf).amin(-1)
        highest_other = torch.where(possible, -math.inf, out).amax(-1)
        return ((lowest_possible > highest_other) | ~data.mask).all(dim=1)

    def baseline(self) -> Baseline:
        return Baseline(None, 0.5, "the grammar without memory of the second symbol")


TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        Adding,
        CopyMemory,
        DelayedRecall,
        HochreiterAdding,
        HochreiterMultiplication,
        TemporalOrder,
        TemporalOrder3,
        NoiseFreeLags,
        EmbeddedReber,
    )
}


def task_names() -> list[str]:
    return list(TASKS)


def is_task(name: str) -> bool:
    return name in TASKS


def make_task(name: str, seq_len: int = 0, delay: int = 0) -> Task:
    if name not in TASKS:
        raise unknown_name("task", name, TASKS)
    return TASKS[name](seq_len, delay)
