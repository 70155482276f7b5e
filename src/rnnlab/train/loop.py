"""The training loop: one screen for a step, one for an epoch, one for a run.

A run directory holds:
  config.json        the resolved RunConfig
  metrics.jsonl      one line per finished epoch
  checkpoint.safetensors   the last finished epoch: model, optimizer, counters, RNG (for --resume)
  model.safetensors  the weights of the best-validation epoch
  result.json        the outcome, written when training ends
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import rnnlab
from rnnlab.data import Batch, load_polyphonic, make_batches, split_windows, to_tensors
from rnnlab.errors import ConfigError, DataError, RunDirError, TrainingDiverged
from rnnlab.models.rnn import RNNPredictor, count_parameters
from rnnlab.train.checkpoint import (
    atomic_write_text,
    load_model_weights,
    load_training_checkpoint,
    read_json,
    save_model,
    save_training_checkpoint,
    write_json,
)
from rnnlab.train.config import RunConfig
from rnnlab.train.metrics import evaluate_nll

CONFIG, METRICS, CHECKPOINT, MODEL, RESULT = (
    "config.json",
    "metrics.jsonl",
    "checkpoint.safetensors",
    "model.safetensors",
    "result.json",
)


def set_seed(seed: int) -> None:
    """The one place the global RNG is seeded."""
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    t = cfg.train
    params = model.parameters()
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


@dataclass(frozen=True)
class StepStats:
    nll: float  # mean NLL per frame of the batch
    total: float  # summed log-likelihood of the batch
    grad_norm: float  # before clipping


def train_step(
    model: RNNPredictor,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    clip: float,
    weight_noise: float = 0.0,
) -> StepStats:
    """Forward, backward, clip, step on a batch of music. Raises ``TrainingDiverged`` before a
    non-finite update. With ``weight_noise`` the loss and its gradient are taken at weights
    perturbed by fresh Gaussian noise (Graves 2011); the update is applied to the unperturbed
    weights."""

    def loss() -> tuple[torch.Tensor, float]:
        out = model(batch.x, batch.lengths, batch.first_input)
        return out.nll_per_frame, float(out.total.detach())

    return optimise(model, loss, optimizer, clip, weight_noise)


def optimise(
    model: nn.Module,
    loss_fn: Callable[[], tuple[torch.Tensor, float]],
    optimizer: torch.optim.Optimizer,
    clip: float,
    weight_noise: float = 0.0,
) -> StepStats:
    """One update of any model: ``loss_fn()`` returns the loss to minimise and a number to report
    (summed over the batch). Weight noise, clipping and the divergence checks as ``train_step``."""
    model.train()
    noise = _perturb_weights(model, weight_noise)
    try:
        loss, total = loss_fn()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        _restore_weights(noise)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else math.inf)
    if not torch.isfinite(grad_norm):
        raise TrainingDiverged(f"the gradient norm became {grad_norm.item()}")
    optimizer.step()
    return StepStats(loss.item(), total, grad_norm.item())


def _perturb_weights(model: nn.Module, std: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Add N(0, std^2) noise to every weight matrix (parameters with 2 or more dimensions);
    returns the unperturbed values."""
    if std <= 0:
        return []
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                saved.append((p, p.clone()))
                p.add_(torch.randn_like(p), alpha=std)
    return saved


def _restore_weights(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put back the exact unperturbed values (subtracting the noise would not be exact)."""
    with torch.no_grad():
        for p, original in saved:
            p.copy_(original)


def load_sequences(data: str) -> dict[str, list[torch.Tensor]]:
    rolls = load_polyphonic(data)
    return {split: to_tensors(pieces) for split, pieces in rolls.splits.items()}


class Problem(ABC):
    """What a run trains: its model, its training batches and its evaluation. ``score`` names the
    number that selects the best epoch (lower is better): ``nll`` for music, ``loss`` for tasks."""

    score = "nll"
    model: nn.Module

    @abstractmethod
    def train_batches(self, epoch: int) -> Iterable[Any]:
        """The batches of one epoch, in order."""

    @abstractmethod
    def batch_loss(self, batch: Any) -> tuple[torch.Tensor, float, float]:
        """(loss to minimise, the score summed over the batch, how many terms it sums)."""

    @abstractmethod
    def evaluate(self, split: str) -> dict[str, Any]:
        """At least ``{"score": ...}``; anything else is reported beside it."""

    def finalise(self, out: Path) -> None:  # noqa: B027 (a hook: most problems need nothing)
        """Called once training ends, before ``result`` (the VRNN's IW estimate is made here)."""

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        """The problem's own fields of result.json, from the best epoch's evaluations."""
        return {f"valid_{self.score}": valid["score"], f"test_{self.score}": test["score"]}


class MusicProblem(Problem):
    """Next-frame prediction on polyphonic music: NLL per frame."""

    def __init__(self, cfg: RunConfig) -> None:
        t = cfg.train
        self.cfg = cfg
        self.data = load_sequences(t.data)
        self.first_inputs: list[torch.Tensor] | None = None
        if t.window:
            # Windows give more updates per epoch on long pieces (truncated backpropagation
            # without carrying the state); each window's first input is the true previous frame.
            self.data["train"], self.first_inputs = split_windows(self.data["train"], t.window)
        if self.data["train"][0].shape[-1] != cfg.model.frame_size:
            raise DataError(
                f"{t.data}: frames have {self.data['train'][0].shape[-1]} units, the model "
                f"expects {cfg.model.frame_size}"
            )
        self.model = self.build_model()

    def build_model(self) -> nn.Module:
        return RNNPredictor(self.cfg.model)

    def train_batches(self, epoch: int) -> Iterable[Batch]:
        t = self.cfg.train
        # The shuffle of each epoch depends only on (seed, epoch): resuming reproduces it exactly.
        generator = torch.Generator().manual_seed(t.seed * 1_000_003 + epoch)
        return make_batches(
            self.data["train"],
            t.batch_size,
            shuffle=True,
            generator=generator,
            first_inputs=self.first_inputs,
        )

    def batch_loss(self, batch: Batch) -> tuple[torch.Tensor, float, float]:
        out = self.model(batch.x, batch.lengths, batch.first_input)
        return out.nll_per_frame, -float(out.total.detach()), batch.num_frames

    def evaluate(self, split: str) -> dict[str, Any]:
        return {"score": evaluate_nll(self.model, self.data[split]).nll}  # type: ignore[arg-type]


def make_problem(cfg: RunConfig) -> Problem:
    from rnnlab.data.tasks import is_task
    from rnnlab.train.text import is_text

    text = is_text(cfg.train.data, cfg.train.data_dir)
    if text != (cfg.model.model in ("lm", "sentence-vae", "sentence-lm")):
        raise ConfigError(
            f"{cfg.train.data!r} is a text corpus: "
            "train it with --model lm, sentence-vae or sentence-lm"
            if text
            else f"--model {cfg.model.model} needs a text corpus (ptb, ptb-char or --data-dir), "
            f"not {cfg.train.data!r}"
        )

    if is_task(cfg.train.data):
        from rnnlab.train.tasks import TaskProblem

        return TaskProblem(cfg)
    if cfg.model.model == "vrnn":
        from rnnlab.train.latent import VRNNProblem

        return VRNNProblem(cfg)
    if cfg.model.model == "lm":
        from rnnlab.train.text import TextProblem

        return TextProblem(cfg)
    if cfg.model.model in ("sentence-vae", "sentence-lm"):
        from rnnlab.train.sentence_vae import SentenceVAEProblem

        return SentenceVAEProblem(cfg)
    return MusicProblem(cfg)


def train_run(
    out: Path,
    cfg: RunConfig | None,
    *,
    resume: bool = False,
    epochs: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    epoch_callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train into ``out`` (new) or continue it (``resume``, optionally with more ``epochs``).
    ``epoch_callback`` sees each finished epoch's metrics row after its checkpoint is written
    (a study's pruner raises from it to stop the run).

    Returns the result dictionary also written to ``out/result.json``.
    """
    out = Path(out)
    cfg = _prepare_run_dir(out, cfg, resume, epochs)
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    set_seed(t.seed)
    problem = make_problem(cfg)
    model = problem.model
    optimizer = make_optimizer(model, cfg)
    counters: dict[str, Any] = {
        "epoch": 0,
        "best_epoch": 0,
        "best_valid": math.inf,
        "best_test": None,
        "best_valid_eval": None,
        "best_test_eval": None,
        "bad_epochs": 0,
        "lr_bad_epochs": 0,
        "wall_time": 0.0,
        "history": [],
    }
    if resume and (out / CHECKPOINT).exists():
        counters = load_training_checkpoint(out / CHECKPOINT, model, optimizer)
        log(f"resuming {out} after epoch {counters['epoch']}")

    bar = tqdm(
        total=t.epochs,
        initial=counters["epoch"],
        disable=not progress,
        unit="epoch",
        desc=f"{t.data}/{cfg.model.cell}",
        leave=False,
    )
    stopped = "max-epochs"
    try:
        for epoch in range(counters["epoch"] + 1, t.epochs + 1):
            if counters["bad_epochs"] >= t.patience > 0:
                stopped = "early-stopping"
                break
            row = _run_epoch(problem, optimizer, cfg, epoch, counters, out)
            _save_epoch(out, model, optimizer, counters, row)
            if epoch_callback is not None:
                epoch_callback(row)
            bar.update(1)
            key = problem.score
            bar.set_postfix(
                train=f"{row['train_' + key]:.4g}",
                valid=f"{row['valid_' + key]:.4g}",
                best=f"{counters['best_valid']:.4g}",
            )
            if row.get("valid_stop"):  # a task's validation set meets its stopping rule
                stopped = "solved"
                break
        else:
            if counters["bad_epochs"] >= t.patience > 0:
                stopped = "early-stopping"
    except TrainingDiverged as exc:
        kept = counters["epoch"]
        raise TrainingDiverged(
            f"{exc} in epoch {kept + 1}; training stopped. The last good checkpoint (epoch {kept})"
            f" is kept in {out}; try a lower --lr or a --clip value"
        ) from None
    finally:
        bar.close()

    problem.finalise(out)
    result = {
        "data": t.data,
        "model": cfg.model.model,
        "cell": cfg.model.cell,
        "hidden_size": cfg.model.hidden_size,
        "num_layers": cfg.model.num_layers,
        "num_params": count_parameters(model),
        "epochs_run": counters["epoch"],
        "stopped": stopped,
        "best_epoch": counters["best_epoch"],
        **problem.result(
            counters["best_valid_eval"] or {"score": None},
            counters["best_test_eval"] or {"score": None},
        ),
        "wall_time_s": round(counters["wall_time"], 1),
        "threads": torch.get_num_threads(),
        "versions": {"rnnlab": rnnlab.__version__, "torch": torch.__version__},
    }
    write_json(out / RESULT, result)
    return result


def _run_epoch(
    problem: Problem,
    optimizer: torch.optim.Optimizer,
    cfg: RunConfig,
    epoch: int,
    counters: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """Train one epoch, validate, keep the best model, adjust the LR; updates ``counters``."""
    t = cfg.train
    model = problem.model
    start = time.perf_counter()
    if t.lr_decay_start:  # a fixed schedule: lr * decay^(epochs past the start)
        for group in optimizer.param_groups:
            group["lr"] = max(t.lr * t.lr_decay ** max(0, epoch - t.lr_decay_start), t.min_lr)
    total, terms, norms = 0.0, 0.0, []
    for batch in problem.train_batches(epoch):
        box: list[float] = []
        stats = optimise(model, _batch_loss(problem, batch, box), optimizer, t.clip, t.weight_noise)
        total += stats.total
        terms += box[0]
        norms.append(stats.grad_norm)
    valid_eval = problem.evaluate("valid")
    valid = valid_eval["score"]
    if not math.isfinite(valid):
        raise TrainingDiverged(f"the validation {problem.score} became {valid}")
    lr = optimizer.param_groups[0]["lr"]
    test_eval = None
    # A task run stops at the first epoch that solves its validation set: that epoch is then the
    # run's model, even where another epoch had a lower validation loss.
    newly_solved = bool(valid_eval.get("stop")) and not (counters["best_valid_eval"] or {}).get(
        "stop"
    )
    if valid < counters["best_valid"] or newly_solved:
        test_eval = problem.evaluate("test")
        counters.update(
            best_valid=valid,
            best_epoch=epoch,
            best_test=test_eval["score"],
            best_valid_eval=valid_eval,
            best_test_eval=test_eval,
            bad_epochs=0,
            lr_bad_epochs=0,
        )
        meta = {"epoch": epoch, f"valid_{problem.score}": valid}
        meta[f"test_{problem.score}"] = test_eval["score"]
        save_model(out / MODEL, model, meta)
    else:
        counters["bad_epochs"] += 1
        counters["lr_bad_epochs"] += 1
        if counters["lr_bad_epochs"] >= t.lr_patience and not t.lr_decay_start:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] * t.lr_decay, t.min_lr)
            counters["lr_bad_epochs"] = 0
    seconds = time.perf_counter() - start
    counters["wall_time"] += seconds
    counters["epoch"] = epoch
    key = problem.score
    row: dict[str, Any] = {
        "epoch": epoch,
        f"train_{key}": total / terms,
        f"valid_{key}": valid,
        f"test_{key}": None if test_eval is None else test_eval["score"],
    }
    row |= {f"valid_{k}": v for k, v in valid_eval.items() if k != "score"}
    if test_eval is not None:
        row |= {f"test_{k}": v for k, v in test_eval.items() if k != "score"}
    row |= {"lr": lr, "grad_norm": sum(norms) / len(norms), "seconds": round(seconds, 3)}
    return row


def _batch_loss(
    problem: Problem, batch: Any, terms_out: list[float]
) -> Callable[[], tuple[torch.Tensor, float]]:
    """The closure ``optimise`` calls; it leaves the number of terms of the batch in terms_out."""

    def loss() -> tuple[torch.Tensor, float]:
        value, summed, terms = problem.batch_loss(batch)
        terms_out.append(terms)
        return value, summed

    return loss


def _save_epoch(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    counters: dict[str, Any],
    row: dict[str, Any],
) -> None:
    """Checkpoint first, then metrics.jsonl rewritten from the checkpoint's own history, so the
    two never disagree, whenever the process is stopped."""
    counters["history"].append(row)
    save_training_checkpoint(out / CHECKPOINT, model, optimizer, counters)
    atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in counters["history"]))


def _prepare_run_dir(
    out: Path, cfg: RunConfig | None, resume: bool, epochs: int | None
) -> RunConfig:
    """Create a new run directory, or check and read an existing one for --resume."""
    if resume:
        if not (out / CONFIG).is_file():
            raise RunDirError(f"{out} is not a run directory (no {CONFIG}); nothing to resume")
        saved = RunConfig.from_dict(read_json(out / CONFIG))
        if cfg is not None and cfg != saved:
            raise ConfigError(
                f"--resume continues {out} with its own {CONFIG}; only --epochs may change"
            )
        if epochs is not None and epochs != saved.train.epochs:
            saved = RunConfig(saved.model, replace(saved.train, epochs=epochs))
            write_json(out / CONFIG, saved.to_dict())
        return saved
    if cfg is None:
        raise ConfigError("a new run needs a configuration")
    if out.exists() and any(out.iterdir()):
        raise RunDirError(
            f"{out} already exists and is not empty; "
            "continue it with --resume or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, cfg.to_dict())
    return cfg


def load_run(run: Path) -> tuple[RunConfig, Any, dict[str, Any]]:
    """The config and best-validation model of a run directory (for eval, sample, compare): an
    RNNPredictor for music, a TaskModel for a long-lag task."""
    from rnnlab.data.tasks import is_task

    run = Path(run)
    if not run.is_dir() or not (run / CONFIG).is_file():
        raise RunDirError(f"{run} is not a run directory (no {CONFIG})")
    cfg = RunConfig.from_dict(read_json(run / CONFIG))
    model: nn.Module
    if is_task(cfg.train.data):
        from rnnlab.models.task import TaskModel
        from rnnlab.train.tasks import task_of

        model = TaskModel(cfg.model, task_of(cfg.train))
    elif cfg.model.model == "vrnn":
        from rnnlab.models.vrnn import VRNN

        model = VRNN(cfg.model)
    elif cfg.model.model in ("lm", "sentence-vae", "sentence-lm"):
        model = make_problem(cfg).model  # the vocabulary comes from the corpus
    else:
        model = RNNPredictor(cfg.model)
    if not (run / MODEL).is_file():
        raise RunDirError(f"{run} has no {MODEL} yet (no epoch has finished)")
    meta = load_model_weights(run / MODEL, model)
    model.eval()
    return cfg, model, meta
