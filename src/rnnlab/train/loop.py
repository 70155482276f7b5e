"""The training loop: one screen for a step, one for an epoch, one for a run. It knows nothing of
any family: the run's ``Problem`` (``rnnlab.families``) gives the batches, the loss and the score.

A run directory holds:
  config.json        {"format": 2, "family": NAME, "score": {...}, "config": {the options}}
  assets.json        what rebuilds the model without the data (vocabulary, normalisation, the
                     data's description), written with config.json
  metrics.jsonl      one line per finished epoch
  checkpoint.safetensors   the last finished epoch: model, optimizer, counters, RNG (for --resume)
  model.safetensors  the weights of the best-validation epoch
  result.json        the outcome, written when training ends

Nothing is written until the data has loaded and the model is built, so a run that fails to
start leaves no directory behind to block the corrected command.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import rnnlab
from rnnlab.data import Batch
from rnnlab.device import model_device, resolve_device, to_device
from rnnlab.errors import ConfigError, RunDirError, TrainingDiverged
from rnnlab.families import Family, Problem, family_of
from rnnlab.files import atomic_write_text, write_json
from rnnlab.models.rnn import RNNPredictor, count_parameters
from rnnlab.recurrent import collecting_statistics, model_penalty, prepare_backends
from rnnlab.train.checkpoint import (
    ASSETS,
    CHECKPOINT,
    CONFIG,
    LOCK,
    METRICS,
    MODEL,
    RESULT,
    checkpoint_epoch,
    load_model_weights,
    load_training_checkpoint,
    save_model,
    save_training_checkpoint,
)
from rnnlab.train.progress import RunLog, interactive
from rnnlab.train.rundir import config_document, read_assets, read_run_config


def set_seed(seed: int) -> None:
    """The one place the global RNG is seeded."""
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    t = cfg
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


def train_run(
    out: Path,
    cfg: Any,
    *,
    resume: bool = False,
    epochs: int | None = None,
    system: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    epoch_callback: Callable[[dict[str, Any]], None] | None = None,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` (a family's config) into ``out`` (new), or continue ``out`` (``resume``,
    optionally with more ``epochs``, and with ``system`` options that leave the run what it
    is, ``{"device": ..., "threads": ...}``, so that a run started on one device continues on
    another). ``epoch_callback`` sees each finished epoch's metrics row
    after its checkpoint is written (a study's pruner raises from it to stop the run).
    ``log`` gets one line per epoch (``rnnlab.train.progress``); ``progress`` adds a bar within
    each epoch where stderr is a terminal; ``tensorboard`` writes the scalars to ``out``.

    Returns the result dictionary also written to ``out/result.json``.
    """
    out = Path(out)
    if resume:
        with run_lock(out):
            family, cfg, assets = _resume_run_dir(out, cfg, epochs, system or {})
            problem = _problem(family, cfg, assets)
            return _train(out, family, cfg, problem, True, progress, log, epoch_callback,
                          tensorboard)  # fmt: skip
    if cfg is None:
        raise ConfigError("a new run needs a configuration")
    family = family_of(cfg)
    _check_new_run_dir(out, locked=False)
    problem = _problem(family, cfg, None)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(out):
            _check_new_run_dir(out, locked=True)  # again: another process may have started
            # The files of a run killed (SIGKILL, a power cut) before its first epoch ended:
            # no checkpoint was written, so nothing is lost; this command starts it afresh.
            _clear_unfinished(out)
            try:
                _write_run_dir(out, family, cfg, problem.assets())
                return _train(out, family, cfg, problem, False, progress, log, epoch_callback,
                              tensorboard)  # fmt: skip
            except BaseException:
                # A run that failed (or was stopped) before its first epoch ended leaves nothing
                # behind to block the corrected command.
                if not (out / CHECKPOINT).exists():
                    _clear_unfinished(out)
                raise
    except BaseException:
        if created and all(p.name == LOCK for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _problem(family: Family, cfg: Any, assets: dict[str, Any] | None) -> Problem:
    device = resolve_device(cfg.device)  # before the data loads: a wrong device fails at once
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    problem = family.problem(cfg, assets)
    problem.model.to(device)
    return problem


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """An exclusive lock on a run directory while it trains (an flock, released by the kernel
    if the process dies): a second process refuses to train or resume it. Temporary files left
    by a process killed while it wrote are removed by the next holder."""
    import fcntl

    if not out.is_dir():
        raise RunDirError(f"{out} is not a run directory (no {CONFIG}); nothing to resume")
    with open(out / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"{out} is being trained by another process; wait for it to finish (or stop it)"
            ) from None
        try:
            for stale in out.glob("*.tmp"):
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train(
    out: Path,
    family: Family,
    cfg: Any,
    problem: Problem,
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
    epoch_callback: Callable[[dict[str, Any]], None] | None,
    tensorboard: bool,
) -> dict[str, Any]:
    model = problem.model
    prepare_backends(model)  # a first build of the fused kernels is not training time
    optimizer = make_optimizer(model, cfg)
    counters: dict[str, Any] = {
        "epoch": 0,
        "best_epoch": 0,
        "best_valid": family.score.worst,
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
    if counters.get("untrained_valid") is None and counters["epoch"] == 0:
        # The untrained model's validation score: a score far above it means divergence.
        counters["untrained_valid"] = problem.evaluate("valid")["score"]

    runlog = RunLog(out, family.score, cfg.epochs, counters["epoch"],
                    bars=progress and interactive(), log=log, tensorboard=tensorboard)  # fmt: skip
    stopped = "max-epochs"
    started = time.perf_counter()
    try:
        for epoch in range(counters["epoch"] + 1, cfg.epochs + 1):
            if counters["bad_epochs"] >= cfg.patience > 0:
                stopped = "early-stopping"
                break
            row = _run_epoch(problem, family, optimizer, cfg, epoch, counters, out, runlog)
            _save_epoch(out, model, optimizer, counters, row)
            runlog.epoch(row, counters["best_valid"], counters["best_epoch"],
                         time.perf_counter() - started)  # fmt: skip
            if epoch_callback is not None:
                epoch_callback(row)
            if row.get("valid_stop"):  # a task's validation set meets its stopping rule
                stopped = "solved"
                break
        else:
            if counters["bad_epochs"] >= cfg.patience > 0:
                stopped = "early-stopping"
    except TrainingDiverged as exc:
        kept = counters["epoch"]
        where = (f"the last good checkpoint (epoch {kept}) is kept in {out}" if kept else
                 "no epoch had finished, so there is nothing to keep")  # fmt: skip
        raise TrainingDiverged(
            f"{exc} in epoch {kept + 1}; training stopped: {where}. Try a lower --lr or a "
            "--clip value"
        ) from None
    finally:
        runlog.close()

    if (out / MODEL).is_file():
        load_model_weights(out / MODEL, model)  # the best epoch's weights, for finalise
        model.eval()
        problem.finalise()
    valid_eval = counters["best_valid_eval"] or {"score": None}
    test_eval = counters["best_test_eval"] or {"score": None}
    result = {
        "family": family.name,
        "model": family.name,
        "data": cfg.data,
        "cell": getattr(cfg, "cell", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "num_layers": getattr(cfg, "num_layers", 1),
        "num_params": count_parameters(model),
        "epochs_run": counters["epoch"],
        "stopped": stopped,
        "best_epoch": counters["best_epoch"],
        "score": family.score.to_dict(),
        "valid_score": valid_eval["score"],
        "test_score": test_eval["score"],
        **problem.result(valid_eval, test_eval),
        "wall_time_s": round(counters["wall_time"], 1),
        "threads": torch.get_num_threads(),
        "versions": {"rnnlab": rnnlab.__version__, "torch": torch.__version__},
    }
    write_json(out / RESULT, result)
    return result


def _run_epoch(
    problem: Problem,
    family: Family,
    optimizer: torch.optim.Optimizer,
    cfg: Any,
    epoch: int,
    counters: dict[str, Any],
    out: Path,
    runlog: RunLog,
) -> dict[str, Any]:
    """Train one epoch, validate, keep the best model, adjust the LR; updates ``counters``."""
    model = problem.model
    score = family.score
    start = time.perf_counter()
    if cfg.lr_decay_start:  # a fixed schedule: lr * decay^(epochs past the start)
        for group in optimizer.param_groups:
            group["lr"] = max(cfg.lr * cfg.lr_decay ** max(0, epoch - cfg.lr_decay_start),
                              cfg.min_lr)  # fmt: skip
    total, counted, norms = 0.0, list[float](), list[float]()
    for batch in runlog.batches(epoch, problem.train_batches(epoch), counted):
        box: list[float] = []
        stats = optimise(model, _batch_loss(problem, batch, box), optimizer, cfg.clip,
                         cfg.weight_noise)  # fmt: skip
        total += stats.total
        counted.append(box[0])
        norms.append(stats.grad_norm)
    terms = sum(counted)
    with collecting_statistics(model) as valid_statistics:
        valid_eval = problem.evaluate("valid")
    valid = valid_eval["score"]
    if not math.isfinite(valid):
        raise TrainingDiverged(f"the validation {score.label} became {valid}")
    untrained = counters.get("untrained_valid")
    if untrained is not None and math.isfinite(untrained) and _blew_up(valid, untrained, score):
        raise TrainingDiverged(
            f"the validation {score.label} rose to {valid:.4g} {score.unit}, against "
            f"{untrained:.4g} before training (a finite blow-up)"
        )
    lr = optimizer.param_groups[0]["lr"]
    test_eval = None
    # A task run stops at the first epoch that solves its validation set: that epoch is then the
    # run's model, even where another epoch had a better validation score.
    newly_solved = bool(valid_eval.get("stop")) and not (counters["best_valid_eval"] or {}).get(
        "stop"
    )
    test_statistics: dict[str, float] = {}
    if score.better(valid, counters["best_valid"]) or newly_solved:
        with collecting_statistics(model) as test_statistics:
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
        meta = {
            "epoch": epoch,
            f"valid_{score.name}": valid,
            f"test_{score.name}": test_eval["score"],
        }
        save_model(out / MODEL, model, meta)
    else:
        counters["bad_epochs"] += 1
        counters["lr_bad_epochs"] += 1
        if counters["lr_bad_epochs"] >= cfg.lr_patience and not cfg.lr_decay_start:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] * cfg.lr_decay, cfg.min_lr)
            counters["lr_bad_epochs"] = 0
    seconds = time.perf_counter() - start
    counters["wall_time"] += seconds
    counters["epoch"] = epoch
    key = score.name
    row: dict[str, Any] = {
        "epoch": epoch,
        f"train_{key}": total / terms,
        f"valid_{key}": valid,
        f"test_{key}": None if test_eval is None else test_eval["score"],
    }
    row |= {f"valid_{k}": v for k, v in valid_eval.items() if k != "score"}
    row |= {
        f"valid_{k}": v for k, v in valid_statistics.items()
    }  # the cells' own (EGRU's activity)
    if test_eval is not None:
        row |= {f"test_{k}": v for k, v in test_eval.items() if k != "score"}
        row |= {f"test_{k}": v for k, v in test_statistics.items()}
    row |= {"lr": lr, "grad_norm": sum(norms) / len(norms), "seconds": round(seconds, 3)}
    return row


def _blew_up(valid: float, untrained: float, score: Any) -> bool:
    """Far worse than the untrained model: by more than ten times its magnitude (at least 10)."""
    worse = valid - untrained if score.direction == "minimize" else untrained - valid
    return worse > 10.0 * max(1.0, abs(untrained))


def _batch_loss(
    problem: Problem, batch: Any, terms_out: list[float]
) -> Callable[[], tuple[torch.Tensor, float]]:
    """The closure ``optimise`` calls; it leaves the number of terms of the batch in terms_out."""

    on_device = to_device(batch, model_device(problem.model))

    def loss() -> tuple[torch.Tensor, float]:
        value, summed, terms = problem.batch_loss(on_device)
        terms_out.append(terms)
        penalty = model_penalty(problem.model)  # the cells' own terms (GateL0RD's L0 penalty)
        return (value if penalty is None else value + penalty), summed

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


# --- run directories ---------------------------------------------------------------------------
def _check_new_run_dir(out: Path, locked: bool) -> None:
    """A new run goes into a new or empty folder, or one holding only the files of a run that
    never finished an epoch (no checkpoint) and that no living process trains (``locked``: this
    process holds the lock)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory")
    if not out.exists() or all(p.name == LOCK for p in out.iterdir()):
        return
    if not locked and _lock_held(out):
        raise RunDirError(f"{out} is being trained by another process; wait for it to finish "
                          "(or stop it), or choose another --out")  # fmt: skip
    if (out / CHECKPOINT).exists():
        raise RunDirError(f"{out} already exists and holds a run with a checkpoint; continue "
                          "it with --resume or choose another --out")  # fmt: skip
    others = sorted(p.name for p in out.iterdir() if not _is_run_file(p))
    if others:
        raise RunDirError(f"{out} already exists and holds other files than a run's "
                          f"({', '.join(others[:3])}); choose another --out")  # fmt: skip


def _is_run_file(path: Path) -> bool:
    """A file that a run writes before its first checkpoint."""
    name = path.name
    return path.is_file() and (
        name in (CONFIG, ASSETS, METRICS, MODEL, RESULT, LOCK)
        or name.startswith("events.out.tfevents.")
        or name.endswith(".tmp")
    )


def _clear_unfinished(out: Path) -> None:
    """Remove the files of a run that has no checkpoint (the lock file stays: it is held)."""
    for path in out.iterdir():
        if path.name != LOCK and _is_run_file(path):
            path.unlink(missing_ok=True)


def _lock_held(out: Path) -> bool:
    """Whether a living process holds ``out``'s lock (see ``run_lock``)."""
    import fcntl

    if not (out / LOCK).is_file():
        return False
    with open(out / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _write_run_dir(out: Path, family: Family, cfg: Any, assets: dict[str, Any]) -> None:
    """config.json and assets.json, written once the problem is built (its data loaded)."""
    write_json(out / ASSETS, assets)
    write_json(out / CONFIG, config_document(family, cfg))


def _resume_run_dir(
    out: Path, cfg: Any, epochs: int | None, system: dict[str, Any]
) -> tuple[Family, Any, dict[str, Any]]:
    family, saved, legacy = read_run_config(out)
    if legacy:
        raise RunDirError(f"{out} was written by an older rnnlab; upgrade it first with: "
                          f"rnnlab upgrade {out}")  # fmt: skip
    if not (out / CHECKPOINT).is_file():
        raise RunDirError(f"{out} has no {CHECKPOINT}: no epoch finished, so there is nothing "
                          "to resume; start it afresh with the same command without --resume "
                          "(the unfinished run's files are replaced)")  # fmt: skip
    done = checkpoint_epoch(out / CHECKPOINT)
    if epochs is not None and epochs < done:
        raise ConfigError(f"--epochs {epochs} is below the {done} epoch(s) {out} has already "
                          f"run; give --epochs {done} or more")  # fmt: skip
    if cfg is not None and cfg != saved:
        raise ConfigError(
            f"--resume continues {out} with its own {CONFIG}; only --epochs, --device and "
            "--threads may change"
        )
    assets = read_assets(out, family, saved, legacy)
    changes = {k: v for k, v in system.items() if v is not None}
    if epochs is not None:
        changes["epochs"] = epochs
    if changes:
        changed = replace(saved, **changes)  # checked like any config (__post_init__)
        if changed != saved:
            saved = changed
            write_json(out / CONFIG, config_document(family, saved))
    return family, saved, assets
