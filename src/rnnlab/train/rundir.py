"""Run directories: their config.json (format 2: family, score, the family's options), reading
them back (old format 1 through train.legacy), and loading a trained model from one.

A run directory holds config.json, assets.json, metrics.jsonl, checkpoint.safetensors,
model.safetensors and result.json (see rnnlab.train.loop, which writes them).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from rnnlab.device import resolve_device
from rnnlab.errors import ConfigError, RunDirError
from rnnlab.families import Family, Problem, get_family
from rnnlab.files import read_json, write_json
from rnnlab.train.checkpoint import (
    ASSETS,
    CHECKPOINT,
    CONFIG,
    MODEL,
    check_readable,
    load_model_weights,
)
from rnnlab.train.legacy import upgrade_config

FORMAT = 2  # of config.json; format 1 (rnnlab before the families) is read by train.legacy


def config_document(family: Family, cfg: Any) -> dict[str, Any]:
    return {"format": FORMAT, "family": family.name, "score": family.score.to_dict(),
            "config": cfg.to_dict()}  # fmt: skip


def read_run_config(run: Path) -> tuple[Family, Any, bool]:
    """The family and config of a run directory, and whether it is in the old format (1)."""
    if not run.is_dir() or not (run / CONFIG).is_file():
        raise RunDirError(f"{run} is not a run directory (no {CONFIG})")
    document = read_json(run / CONFIG)
    if not isinstance(document, dict):
        raise RunDirError(f"{run / CONFIG}: not a run configuration")
    if "format" not in document:
        name, options = upgrade_config(document, run)
        family = get_family(name)
        return family, family.config_type.from_dict(options), True
    if document.get("format") != FORMAT or set(document) != {"format", "family", "score", "config"}:
        raise RunDirError(f"{run / CONFIG}: format {document.get('format')!r} is not one this "
                          f"rnnlab reads ({FORMAT})")  # fmt: skip
    family = get_family(str(document["family"]))
    if not isinstance(document["config"], dict):
        raise RunDirError(f"{run / CONFIG}: 'config' must be a JSON object of options, got "
                          f"{type(document['config']).__name__}")  # fmt: skip
    try:
        cfg = family.config_type.from_dict(document["config"])
    except ConfigError as exc:
        raise RunDirError(f"{run / CONFIG}: {exc}") from None
    return family, cfg, False


def read_assets(run: Path, family: Family, cfg: Any, legacy: bool) -> dict[str, Any]:
    """assets.json, or for a run in the old format what its data gives (as before: from the
    dataset or corpus its config names)."""
    if (run / ASSETS).is_file():
        assets = read_json(run / ASSETS)
        if not isinstance(assets, dict):
            raise RunDirError(f"{run / ASSETS}: not a JSON object")
        return assets
    if not legacy:
        raise RunDirError(f"{run} has no {ASSETS}: the run directory is incomplete")
    return family.problem(cfg).assets()


def upgrade_run(run: Path) -> str:
    """Rewrite an old run directory's config.json in the current format and write its
    assets.json (read off its data); returns the family's name."""
    family, cfg, legacy = read_run_config(run)
    if not legacy:
        raise RunDirError(f"{run} is already in the current format")
    assets = read_assets(run, family, cfg, legacy)
    write_json(run / "config.v1.json", read_json(run / CONFIG))
    write_json(run / ASSETS, assets)
    write_json(run / CONFIG, config_document(family, cfg))  # atomic: old or new, never half
    return family.name


@dataclass
class LoadedRun:
    """A run directory read back: its family, config, assets, and best-validation model (in
    evaluation mode) with the metadata of its epoch."""

    path: Path
    family: Family
    cfg: Any
    assets: dict[str, Any]
    model: nn.Module
    meta: dict[str, Any]

    def problem(self, data: str | None = None) -> Problem:
        """The run's problem (its data loaded; ``data`` another dataset of the same kind) with
        the trained model in it."""
        cfg = self.cfg if data is None else replace(self.cfg, data=data)
        problem = self.family.problem(cfg, self.assets)
        problem.model = self.model
        return problem


def load_run(run: Path, device: str = "cpu") -> LoadedRun:
    """A run directory's family, config, assets and best-validation model, on ``device``
    (``cpu``, ``cuda``, ``cuda:N`` or ``auto``; wherever the run was trained)."""
    where = resolve_device(device)
    run = Path(run)
    family, cfg, legacy = read_run_config(run)
    if not (run / MODEL).exists() and not (run / MODEL).is_symlink():
        if not (run / CHECKPOINT).exists():
            raise RunDirError(f"{run} has no {MODEL} yet (no epoch has finished)")
        raise RunDirError(f"{run / MODEL} is missing (the best epoch's weights; the run has a "
                          f"{CHECKPOINT}, so the file was removed or moved)")  # fmt: skip
    check_readable(run / MODEL)
    assets = read_assets(run, family, cfg, legacy)
    try:
        model = family.build_model(cfg, assets)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RunDirError(f"{run / ASSETS} lacks or garbles what the {family.name} model needs "
                          f"({type(exc).__name__}: {exc})") from None  # fmt: skip
    meta = load_model_weights(run / MODEL, model)
    model.to(where).eval()
    return LoadedRun(run, family, cfg, assets, model, meta)


def load(run: str | Path, device: str = "cpu") -> nn.Module:
    """The trained model of a run directory, ready to use (evaluation mode, best-validation
    weights, on ``device``); text models carry their vocabulary as ``model.vocab``.

    >>> model = load("runs/my-run")  # doctest: +SKIP
    """
    return load_run(Path(run), device).model
