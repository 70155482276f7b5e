"""Models for the long-time-lag tasks: the Recurrent stack of the foundation plus the head that the
task's kind asks for (regression or a class after the last step, a class or a set of classes at
every step). Architecture options are the music model's ``ModelConfig``; the input and output
sizes come from the task."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.data.tasks import Task
from rnnlab.heads import BernoulliHead, CategoricalHead, RegressionHead, last_step
from rnnlab.models.rnn import ModelConfig, make_recurrent


class TaskModel(nn.Module):
    """``forward(x, lengths)`` returns what the task's loss takes: (B,) values for regression,
    (B, K) logits for a class at the end, (B, T, K) logits for targets at every step.

    >>> import torch
    >>> from rnnlab.data.tasks import make_task
    >>> task = make_task("copy", seq_len=5)
    >>> model = TaskModel(ModelConfig(cell="gru", hidden_size=8, dropout=0.0), task)
    >>> data = task.generate(2, torch.Generator().manual_seed(0))
    >>> tuple(model(data.x, data.lengths).shape)
    (2, 25, 10)
    """

    def __init__(self, config: ModelConfig, task: Task) -> None:
        super().__init__()
        self.config = config
        self.kind = task.kind
        self.rnn = make_recurrent(config, task.input_size)
        H = config.hidden_size
        self.head: nn.Module
        if task.kind == "regression":
            self.head = RegressionHead(H)
        elif task.kind == "multilabel":
            self.head = BernoulliHead(H, task.output_size)
        else:
            self.head = CategoricalHead(H, task.output_size)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        h, _ = self.rnn(x, lengths=lengths)  # (B, T, H), zero past each length
        h = F.dropout(h, self.config.dropout, self.training)
        if self.kind in ("regression", "class"):
            h = last_step(h, lengths)
        return self.head.logits(h)  # type: ignore[operator]
