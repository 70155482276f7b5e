"""What a run tells its user while it trains, as the tools people like do it (Keras, Lightning,
fairseq):

- on a terminal, a bar within each epoch: batches done, items (frames, tokens, sentences,
  steps) per second, the running training loss, and the epoch's ETA;
- one line per finished epoch, always (also when the output is a file or a pipe, where no bar
  is drawn): train, valid and best scores, learning rate, seconds, and the run's ETA;
- TensorBoard scalars in the run directory beside metrics.jsonl: every number of metrics.jsonl,
  tagged ``<quantity>/<split>`` (``nll/train``, ``nll/valid``, ``kl_per_frame/test``, ``lr``,
  ``grad_norm``, ``seconds``), at the epoch as the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rnnlab.console import interactive

SPLITS = ("train", "valid", "test")
__all__ = ["RunLog", "interactive", "tensorboard_tags"]


def tensorboard_tags(row: dict[str, Any]) -> dict[str, float]:
    """The scalars of a metrics row under TensorBoard tags (numbers only; flags and None left
    out).

    >>> tensorboard_tags({"epoch": 3, "train_nll": 8.1, "valid_kl": 0.5, "lr": 0.01,
    ...                   "test_nll": None, "valid_solved": True})
    {'nll/train': 8.1, 'kl/valid': 0.5, 'lr': 0.01}
    """
    tags = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        split, _, rest = key.partition("_")
        tags[f"{rest}/{split}" if split in SPLITS and rest else key] = float(value)
    return tags


class RunLog:
    """The progress of one run: ``batches`` wraps an epoch's batches in a bar (on a terminal),
    ``epoch`` writes the epoch's line and its scalars."""

    def __init__(self, out: Path, score: Any, epochs: int, start: int, *, bars: bool,
                 log: Callable[[str], None], tensorboard: bool = True) -> None:  # fmt: skip
        self.score, self.epochs, self.start = score, epochs, start
        self.bars, self.log = bars, log
        unit = str(score.unit)
        self.items = f"{unit.split('/')[1]}s" if "/" in unit else "items"
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # On resume, events after the checkpoint's epoch (from a run killed later) are
            # purged, so the curves are those of the run as it continues.
            self.writer = SummaryWriter(str(out), purge_step=start + 1 if start else None)

    def batches(self, epoch: int, batches: Iterable[Any], terms: list[float]) -> Iterator[Any]:
        """Yield the batches; ``terms`` grows by each batch's count of items (for the rate)."""
        total = len(batches) if isinstance(batches, Sized) else None
        bar = tqdm(total=total, disable=not self.bars, leave=False, unit="batch",
                   desc=f"epoch {epoch}/{self.epochs}", dynamic_ncols=True)  # fmt: skip
        try:
            items = 0.0
            for batch in batches:
                yield batch
                bar.update(1)
                if self.bars and terms:
                    items += terms[-1]  # the batch just trained (a running sum, not a re-sum)
                    rate = items / max(bar.format_dict["elapsed"], 1e-9)
                    bar.set_postfix_str(f"{rate:,.0f} {self.items}/s", refresh=False)
        finally:
            bar.close()

    def epoch(self, row: dict[str, Any], best: float, best_epoch: int, wall: float) -> None:
        key = self.score.name
        epoch = row["epoch"]
        left = (self.epochs - epoch) * wall / max(1, epoch - self.start)
        test = row.get(f"test_{key}")
        self.log(
            f"epoch {epoch}/{self.epochs}: train {_f(row[f'train_{key}'])}, valid "
            f"{_f(row[f'valid_{key}'])}" + (f", test {_f(test)}" if test is not None else "")
            + f" {self.score.unit}; best valid {_f(best)} (epoch {best_epoch}); lr "
            f"{row['lr']:.3g}; {row['seconds']:.1f} s; ETA {_duration(left)}"
        )  # fmt: skip
        if self.writer is not None:
            for tag, value in tensorboard_tags(row).items():
                self.writer.add_scalar(tag, value, epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _f(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e5 else f"{value:.4g}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
