"""Studies on Optuna: create, run workers, status.

Storage: an SQLite file in the study's directory by default, or any SQLAlchemy URL (a PostgreSQL
URL lets workers on many machines share one study). Workers pull trials until the study holds
its target number of finished trials (complete, or failed because training diverged). Each trial
runs the same ``train_run`` as ``rnnlab train`` into its own run directory and keeps it.

A worker records a heartbeat for its running trial; a worker that dies leaves its trial stale,
and the next worker to look marks it failed and re-queues its parameters (Optuna's
``RetryHeartbeatStaleTrialCallback``); the retry resumes the dead trial's run directory from its
last checkpoint, so an interrupted study continues where it stopped and no trial runs twice.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from rnnlab.errors import ConfigError, RnnlabError, RunDirError, TrainingDiverged, unknown_name
from rnnlab.study.space import check_space, run_config, space_family, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)
SAMPLERS = ("random", "tpe")
PRUNERS = ("none", "median")
# A running trial's heartbeat period, and how long without one before it counts as dead
# (environment variables, for machines with slow networks, and for tests).
HEARTBEAT_S = int(os.environ.get("RNNLAB_HEARTBEAT_S", "10"))
GRACE_S = int(os.environ.get("RNNLAB_GRACE_S", "60"))
CLAIM_WAIT_S = 1.0


def default_storage(directory: Path, name: str) -> str:
    return f"sqlite:///{(directory / name / 'study.db').resolve()}"


def check_default_storage(directory: Path, name: str) -> None:
    """A study kept in --dir (no --storage) must be there: its folder holds study.db. Listing the
    studies that are there beats a database error (and opening a missing SQLite file would
    create an empty one)."""
    if (directory / name / "study.db").is_file():
        return
    if not directory.is_dir():
        there = ": there is no such folder"
    else:
        found = sorted(p.parent.name for p in directory.glob("*/study.db"))
        there = f"; studies there: {', '.join(found)}" if found else "; it holds no study"
    raise RunDirError(f"no study {name!r} in {directory}{there} (--dir chooses the folder, "
                      "--storage a database)")  # fmt: skip


def open_storage(url: str, heartbeat: int = HEARTBEAT_S, grace: int = GRACE_S) -> RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                engine_kwargs={"pool_pre_ping": True},
            )
        except sqlalchemy.exc.SQLAlchemyError as exc:  # a URL no driver reads, a dead server
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise ConfigError(
                f"--storage {url}: cannot open it ({reason}); a database URL "
                "like sqlite:///studies/x.db or postgresql://host/db"
            ) from None


def create_study(
    name: str,
    space: dict[str, Any],
    storage: str,
    directory: Path,
    trials: int,
    sampler: str = "random",
    pruner: str = "none",
    seed: int = 0,
    stratify: str | None = None,
) -> optuna.Study:
    """A new study (an existing one of that name is an error) with its settings stored in it."""
    check_space(space)
    if sampler not in SAMPLERS:
        raise unknown_name("sampler", sampler, SAMPLERS)
    if pruner not in PRUNERS:
        raise unknown_name("pruner", pruner, PRUNERS)
    if trials < 1:
        raise ConfigError(f"--trials must be positive, got {trials}")
    if stratify and space["params"].get(stratify, {}).get("type") != "categorical":
        raise ConfigError(f"--stratify needs a categorical parameter, not {stratify!r}")
    (directory / name).mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(study_name=name, storage=open_storage(storage))
    except optuna.exceptions.DuplicatedStudyError:
        raise ConfigError(f"a study named {name!r} already exists in {storage}") from None
    settings = {"space": space, "trials": trials, "sampler": sampler, "pruner": pruner,
                "seed": seed, "runs": str((directory / name).resolve())}  # fmt: skip
    study.set_user_attr("rnnlab", settings)
    if stratify:
        # Greff et al. searched each variant on its own: queue the trials round-robin over the
        # categorical's choices, the sampler drawing everything else.
        spec = space["params"][stratify]
        for n in range(trials):
            study.enqueue_trial({stratify: spec["choices"][n % len(spec["choices"])]})
    return study


def load_study(name: str, storage: str) -> tuple[optuna.Study, dict[str, Any]]:
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        names = sorted(optuna.get_all_study_names(storage=open_storage(storage)))
        there = f"; studies there: {', '.join(names)}" if names else "; it holds no study"
        raise RunDirError(f"no study named {name!r} in {storage}{there}") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:  # no database there, or unreachable
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise RunDirError(f"cannot open the study database {storage} ({reason})") from None
    settings = study.user_attrs.get("rnnlab")
    if settings is None:
        raise RunDirError(f"study {name!r} in {storage} was not made by rnnlab study create")
    return study, settings


def _sampler(settings: dict[str, Any], worker_seed: int) -> optuna.samplers.BaseSampler:
    seed = settings["seed"] * 1000 + worker_seed
    if settings["sampler"] == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _claim(study: optuna.Study, trial: optuna.Trial, me: str) -> bool:
    """Whether this worker owns the trial it was just given. Two workers asking at the same
    moment can both be handed the same queued trial where the database does not lock rows
    (SQLite); each writes its name, waits a moment, and only the name that stayed runs it."""
    study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
    trial.set_user_attr("worker", me)
    time.sleep(CLAIM_WAIT_S)
    owner = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    return owner.user_attrs.get("worker") == me


def _fail_silent_trials(study: optuna.Study) -> None:
    """A worker killed between taking a trial and its first heartbeat leaves a RUNNING trial
    that Optuna never calls stale (staleness is judged by heartbeats, and it has none): such a
    trial, older than the grace period, is failed and re-queued like a stale one."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # Optuna wraps the RDB storage in a cache
    engine = getattr(backend, "engine", None)
    if engine is None:
        return
    with engine.connect() as connection:
        beating = {row[0] for row in connection.execute(
            sqlalchemy.text("SELECT trial_id FROM trial_heartbeats"))}  # fmt: skip
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start
        if trial._trial_id in beating or started is None:
            continue
        old_enough = (now - started).total_seconds() > GRACE_S
        if old_enough and storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            failed = storage.get_trial(trial._trial_id)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                RetryHeartbeatStaleTrialCallback(max_retry=3)(study, failed)


def _counting(study: optuna.Study) -> list[int]:
    """The numbers of the trials that count toward the target (see ``counted``)."""
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)
    return [
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.state in live
        or (t.state == TrialState.FAIL and ("diverged" in t.user_attrs or "error" in t.user_attrs))
    ]


def _surplus(study: optuna.Study, number: int, target: int) -> bool:
    """Whether trial ``number`` lies beyond the target among the counting trials, in order."""
    return number not in sorted(_counting(study))[:target]


def counted(study: optuna.Study) -> int:
    """Trials that count toward the target: complete, running, pruned, or failed because
    training diverged or the trial's options were refused (a crashed worker's failure is
    retried, so it does not count)."""
    return len(_counting(study))


def run_worker(
    name: str,
    storage: str,
    worker_seed: int = 0,
    max_trials: int | None = None,
    log: Callable[[str], None] = print,
    directory: Path | None = None,
    system: dict[str, Any] | None = None,
) -> int:
    """Pull and run trials until the study reaches its target; returns how many this worker ran.
    Trials' run directories go under ``directory/NAME`` (this worker's ``--dir``; default: the
    creator's). ``system`` ({"device": ..., "threads": ...}) is where this worker's trials run,
    over the space's fixed values (workers on different machines differ there). While other
    workers' trials are still running when the target is reached, the worker waits: a trial of
    a worker that died goes stale, is failed and re-queued, and this worker runs its retry, so
    the study always finishes while one worker is alive."""
    from rnnlab.train.loop import train_run

    study, settings = load_study(name, storage)
    try:  # a study made before a check existed is refused here, not by a trial's traceback
        check_space(settings["space"])
    except RnnlabError as exc:
        raise ConfigError(f"study {name!r} has a search space rnnlab cannot run: {exc}") from None
    study.sampler = _sampler(settings, worker_seed)
    if settings["pruner"] == "median":
        study.pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    runs = directory / name if directory is not None else Path(settings["runs"])
    me = f"{socket.gethostname()}:{os.getpid()}:{worker_seed}"
    done = 0
    while max_trials is None or done < max_trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed, re-queued
            _fail_silent_trials(study)
        if counted(study) >= settings["trials"]:
            if not any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
                break
            time.sleep(HEARTBEAT_S)  # a running trial may be a dead worker's: wait and look again
            continue
        with warnings.catch_warnings():  # heartbeats are recorded by this loop, not optimize()
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        if not _claim(study, trial, me):
            continue  # another worker took this queued trial at the same moment; it runs it
        if _surplus(study, trial.number, settings["trials"]):
            # Two workers asked at once for the study's last trial: the later one steps back.
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            break
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        number = trial.number if retried is None else retried
        out = runs / f"trial-{number:04d}"
        params = suggest(trial, settings["space"])
        family = space_family(settings["space"])
        try:
            cfg = run_config({**settings["space"].get("fixed", {}), **params, "seed": number,
                              **(system or {})})  # fmt: skip
        except RnnlabError as exc:  # a drawn value the family refuses: this trial fails
            trial.set_user_attr("error", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number} refused: {exc}")
            done += 1
            continue
        log(f"trial {trial.number}{'' if retried is None else f' (retry of {retried})'}: "
            f"{json.dumps(params)} -> {out}")  # fmt: skip
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(study, trial, stop), daemon=True)
        beat.start()
        try:
            try:
                # A trial killed before its first epoch ended has no checkpoint: it starts
                # afresh in the same folder (train_run clears the unfinished run's files).
                resume = (out / "checkpoint.safetensors").is_file()
                pruning = settings["pruner"] != "none"
                result = train_run(
                    out,
                    None if resume else cfg,
                    resume=resume,
                    system=system,
                    progress=False,
                    log=log,
                    epoch_callback=_pruning_callback(trial, family) if pruning else None,
                )
            except TrainingDiverged as exc:
                trial.set_user_attr("diverged", str(exc))
                study.tell(trial, state=TrialState.FAIL)
                log(f"trial {trial.number} diverged: {exc}")
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
            except RnnlabError as exc:  # bad data, a refused option: a failure, not a crash
                trial.set_user_attr("error", str(exc))
                study.tell(trial, state=TrialState.FAIL)
                log(f"trial {trial.number} failed: {exc}")
            else:
                _record(study, trial, result, out)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another worker judged this trial dead (no heartbeat within the grace period) and
            # queued a retry, which resumes the same run directory and records its result.
            log(f"trial {trial.number} was declared stale meanwhile; its retry records it")
        finally:
            stop.set()
            beat.join()
        done += 1
    return done


def _record(study: optuna.Study, trial: optuna.Trial, result: dict[str, Any], out: Path) -> None:
    """The trial's value is the family's validation score; its test score and unit beside it."""
    for key in ("family", "score", "valid_score", "test_score", "num_params", "epochs_run",
                "wall_time_s"):  # fmt: skip
        trial.set_user_attr(key, result.get(key))
    trial.set_user_attr("run", str(out))
    value = result["valid_score"]
    if value is None or not math.isfinite(value):
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)


def _heartbeat(study: optuna.Study, trial: optuna.Trial, stop: threading.Event) -> None:
    storage = study._storage  # the RDB storage this study was loaded with
    while not stop.is_set():
        storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        stop.wait(HEARTBEAT_S)


def _pruning_callback(trial: optuna.Trial, family: Any) -> Callable[[dict[str, Any]], None]:
    key = f"valid_{family.score.name}"

    def report(row: dict[str, Any]) -> None:
        trial.report(row[key], row["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned()

    return report


def status(name: str, storage: str) -> dict[str, Any]:
    study, settings = load_study(name, storage)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value or math.inf) if complete else None
    return {
        "study": name,
        "target": settings["trials"],
        "counted": counted(study),
        "states": states,
        "best": None
        if best is None
        else {
            "number": best.number,
            "score": best.user_attrs.get("score"),
            "valid_score": best.value,
            "test_score": best.user_attrs.get("test_score", best.user_attrs.get("test_nll")),
            "params": best.params,
        },  # fmt: skip
    }
