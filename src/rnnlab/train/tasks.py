"""Training on the long-time-lag tasks (``rnnlab train --data adding ...``).

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
from dataclasses import replace
from typing import Any

import torch

from rnnlab.data.tasks import Task, TaskData, make_task
from rnnlab.models.rnn import ModelConfig
from rnnlab.models.task import TaskModel
from rnnlab.train.config import RunConfig, TrainConfig
from rnnlab.train.loop import Problem

VALID_SEED, TEST_SEED = 2**40 + 1, 2**40 + 2
VALID_SIZE, EVAL_BATCH = 1000, 256


def task_of(train: TrainConfig) -> Task:
    return make_task(train.data, train.seq_len, train.delay)


def resolve_task_config(model: dict[str, Any], train: TrainConfig) -> ModelConfig:
    """The model config of a task run: the input size is the task's, and dropout is off unless
    asked for (it blurs the exact values these tasks need)."""
    task = task_of(train)
    model = {"dropout": 0.0, **model, "frame_size": task.input_size}
    return ModelConfig(**model)


@torch.no_grad()
def evaluate_task(model: torch.nn.Module, task: Task, data: TaskData) -> dict[str, Any]:
    """The task's loss and metric over ``data`` (in chunks), the number of sequences wrong, and
    whether the task's criterion calls it solved."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for start in range(0, len(data), EVAL_BATCH):
        chunk = data.slice(start, start + EVAL_BATCH)
        for k, v in task.metrics(model(chunk.x, chunk.lengths), chunk).items():
            sums[k] = sums.get(k, 0.0) + v
    model.train(was_training)
    summary: dict[str, Any] = dict(task.summarise(sums))
    summary["solved"] = bool(task.solved(summary))
    summary["stop"] = bool(task.stop(summary))
    return summary


class TaskProblem(Problem):
    score = "loss"

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.task = task_of(cfg.train)
        self.model = TaskModel(cfg.model, self.task)
        t = cfg.train
        self.sets = {
            "valid": self.task.generate(min(VALID_SIZE, t.test_size), _gen(VALID_SEED)),
            "test": self.task.generate(t.test_size, _gen(TEST_SEED)),
        }

    def train_batches(self, epoch: int) -> Iterator[TaskData]:
        t = self.cfg.train
        generator = _gen(t.seed * 1_000_003 + epoch)
        size = t.train_size or 100 * t.batch_size
        for start in range(0, size, t.batch_size):
            yield self.task.generate(min(t.batch_size, size - start), generator)

    def batch_loss(self, batch: TaskData) -> tuple[torch.Tensor, float, float]:
        total, terms = self.task.loss_sum(self.model(batch.x, batch.lengths), batch)
        return total / terms, float(total.detach()), terms

    def evaluate(self, split: str) -> dict[str, Any]:
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


def with_task_defaults(train: TrainConfig) -> TrainConfig:
    """A task's TrainConfig with its own sequence length filled in (so config.json says it)."""
    task = task_of(train)
    return replace(train, seq_len=task.seq_len, delay=task.delay)
