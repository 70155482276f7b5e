"""The long-time-lag tasks (``rnnlab train --data adding ...``).

Training sequences are fresh at every epoch, drawn from a generator seeded by (seed, epoch), as in
Hochreiter & Schmidhuber's online training: resuming reproduces them exactly and a model never
sees a test sequence. The validation and test sets are fixed (their own seeds, the same for every
run), so runs are comparable. A run stops as soon as its validation set meets the task's
stopping rule (its ``solved`` criterion, or Hochreiter's stricter rule: every sequence right);
result.json reports the test set's figures, the trivial baseline and the ``solved`` flag
measured on the test set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from rnnlab.data.tasks import TASKS, Task, TaskData, is_task, make_task
from rnnlab.device import model_device, to_device
from rnnlab.families.base import (
    Family,
    Problem,
    RecurrentOptions,
    Score,
    TrainOptions,
    default,
    model_config,
    option,
)
from rnnlab.models.task import TaskModel

VALID_SEED, TEST_SEED = 2**40 + 1, 2**40 + 2
VALID_SIZE, EVAL_BATCH = 1000, 256


@dataclass(frozen=True)
class TaskConfig(TrainOptions, RecurrentOptions):
    """A long-lag task; dropout is off by default (it blurs the exact values these tasks need)."""

    family: ClassVar[str] = "task"
    data: str = option("adding", "the task (`rnnlab data list`)", "data", choices=lambda: TASKS)
    dropout: float = default(RecurrentOptions, "dropout", 0.0)
    seq_len: int = option(
        0, "the sequence length T (0: the task's default)", "data", low=0, high=10**6
    )
    delay: int = option(0, "recall task: the lag k (0: 10)", "data", low=0,
                        requires={"data": ("recall",)})  # fmt: skip
    train_size: int = option(0, "fresh training sequences per epoch (0: 100 batches)", "data",
                             low=0)  # fmt: skip
    test_size: int = option(
        2560, "test sequences (Hochreiter's 2560)", "data", positive=True, high=10**7
    )


def task_of(cfg: Any) -> Task:
    return make_task(cfg.data, cfg.seq_len, cfg.delay)


@torch.no_grad()
def evaluate_task(model: torch.nn.Module, task: Task, data: TaskData) -> dict[str, Any]:
    """The task's loss and metric over ``data`` (in chunks), the number of sequences wrong, and
    whether the task's criterion calls it solved."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for start in range(0, len(data), EVAL_BATCH):
        chunk = to_device(data.slice(start, start + EVAL_BATCH), model_device(model))
        for k, v in task.metrics(model(chunk.x, chunk.lengths), chunk).items():
            sums[k] = sums.get(k, 0.0) + v
    model.train(was_training)
    summary: dict[str, Any] = dict(task.summarise(sums))
    summary["solved"] = bool(task.solved(summary))
    summary["stop"] = bool(task.stop(summary))
    return summary


class TaskProblem(Problem):
    def __init__(self, cfg: TaskConfig, model: nn.Module) -> None:
        self.cfg = cfg
        self.task = task_of(cfg)
        self.model = model
        self.sets = {
            "valid": self.task.generate(min(VALID_SIZE, cfg.test_size), _gen(VALID_SEED)),
            "test": self.task.generate(cfg.test_size, _gen(TEST_SEED)),
        }

    def assets(self) -> dict[str, Any]:
        return {"data": {"data": self.cfg.data, **self.task.describe()}}

    def train_batches(self, epoch: int) -> Iterator[TaskData]:
        cfg = self.cfg
        generator = _gen(cfg.seed * 1_000_003 + epoch)
        size = cfg.train_size or 100 * cfg.batch_size
        for start in range(0, size, cfg.batch_size):
            yield self.task.generate(min(cfg.batch_size, size - start), generator)

    def batch_loss(self, batch: TaskData) -> tuple[torch.Tensor, float, float]:
        total, terms = self.task.loss_sum(self.model(batch.x, batch.lengths), batch)
        return total / terms, float(total.detach()), terms

    def evaluate(self, split: str) -> dict[str, Any]:
        if split not in self.sets:
            from rnnlab.errors import ConfigError

            raise ConfigError("long-lag tasks draw fresh training sequences; use valid or test")
        summary = evaluate_task(self.model, self.task, self.sets[split])
        summary["score"] = summary.pop("loss")
        return summary

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        base = self.task.baseline()
        metric = self.task.metric_name
        return {
            "task": self.task.describe(),
            "valid_loss": valid.get("score"),
            "test_loss": test.get("score"),
            f"test_{metric}": test.get(metric),
            "test_wrong": test.get("wrong"),
            "test_count": test.get("count"),
            "solved": bool(test.get("solved", False)),
            "trivial": {"loss": base.loss, metric: base.metric, "predictor": base.how},
        }


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TaskFamily(Family):
    name = "task"
    title = "long-time-lag tasks (Hochreiter & Schmidhuber 1997 and their modern forms)"
    config_type = TaskConfig
    score = Score("loss", "loss", "task loss")
    portable_data = False  # a model is built for its task's input and output sizes

    def accepts(self, data: str, options: dict[str, Any]) -> bool:
        return is_task(data)

    def data_help(self) -> str:
        return f"a task name ({', '.join(TASKS)})"

    def known_data(self) -> list[str]:
        return list(TASKS)

    def resolve(self, cfg: Any) -> Any:
        """The task's own sequence length (and lag) written out, so config.json says them."""
        task = task_of(cfg)
        return replace(cfg, seq_len=task.seq_len, delay=task.delay)

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        task = task_of(cfg)
        return TaskModel(model_config(cfg, "rnn", "bernoulli",
                                            frame_size=task.input_size), task)  # fmt: skip

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        return TaskProblem(cfg, self.build_model(cfg, assets or {}))

    def summary(self, result: dict[str, Any], out: Path) -> str:
        """The model's test figures beside the trivial predictor's, and the solved flag."""
        trivial = result["trivial"]
        metric = next(k for k in trivial if k not in ("loss", "predictor"))
        loss = "n/a" if trivial["loss"] is None else f"{trivial['loss']:.4g}"
        test_loss = result["test_loss"]
        test_loss = "n/a" if test_loss is None else f"{test_loss:.4g}"
        return (
            f"{result['data']} (T={result['task'].get('seq_len')}) {result['cell']}: test loss "
            f"{test_loss}, {metric} {result.get('test_' + metric)}, wrong "
            f"{result.get('test_wrong')}/{result.get('test_count')}; trivial predictor "
            f"({trivial['predictor']}): loss {loss}, {metric} {trivial[metric]:.4g}; "
            f"solved: {'yes' if result['solved'] else 'no'} ({result['stopped']}, epoch "
            f"{result['best_epoch']}); {result['num_params']:,} parameters, "
            f"{result['wall_time_s']:.0f} s; run: {out}"
        )
