"""Search spaces: a JSON file (or the shipped ``greff`` preset) that names, for each
hyperparameter, a distribution, and the options every trial shares.

    {"params": {"cell": {"type": "categorical", "choices": ["lstm-v", "lstm-nfg"]},
                "hidden_size": {"type": "int", "low": 20, "high": 200, "log": true},
                "lr": {"type": "float", "low": 1e-6, "high": 1e-2, "log": true},
                "momentum": {"type": "one_minus_log", "low": 0.01, "high": 1.0}},
     "fixed": {"data": "jsb", "optimizer": "sgd", "epochs": 20}}

``one_minus_log`` samples 1 - x with x log-uniform in [low, high] (Greff et al.'s momentum).
Parameter and fixed names are ``rnnlab train`` options of one model family: the family named by
a fixed ``model``, else the one the fixed ``data`` implies (music's ``rnn`` without either).
A study compares one family's score, so ``model`` cannot be a searched parameter.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import optuna

from rnnlab.cells import cell_names
from rnnlab.errors import ConfigError, RnnlabError, unknown_name
from rnnlab.families import Family, choose_family, make_config

TYPES = ("categorical", "int", "float", "one_minus_log")

# Greff et al. 2017, Sec. 4 (JSB Chorales): the eight variants and vanilla, hidden size
# log-uniform in [20, 200], learning rate log-uniform in [1e-6, 1e-2], momentum 1 - log-uniform
# [0.01, 1], SGD with momentum. Their Gaussian input noise is not an rnnlab option and is left
# out; the epochs are reduced to fit a laptop (their runs trained to convergence).
GREFF: dict[str, Any] = {
    "params": {
        # lstm-v and the eight variants, from the registry
        "cell": {
            "type": "categorical",
            "choices": [n for n in cell_names() if n.startswith("lstm-")],
        },
        "hidden_size": {"type": "int", "low": 20, "high": 200, "log": True},
        "lr": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "momentum": {"type": "one_minus_log", "low": 0.01, "high": 1.0},
    },
    "fixed": {
        "data": "jsb",
        "optimizer": "sgd",
        "dropout": 0.0,
        "epochs": 20,
        "patience": 5,
        "batch_size": 8,
        "clip": 1.0,
        "threads": 1,
    },
}
PRESETS = {"greff": GREFF}


def load_space(name_or_path: str) -> dict[str, Any]:
    """A preset by name or a JSON file; checked against the config fields."""
    if name_or_path in PRESETS:
        space = json.loads(json.dumps(PRESETS[name_or_path]))
    else:
        path = Path(name_or_path)
        if path.is_dir():
            raise ConfigError(f"--space {path} is a directory, not a JSON file")
        if not path.is_file() and (path.suffix or "/" in name_or_path):  # meant as a file
            raise ConfigError(f"--space {path}: no such file (a search space is "
                              f"{' or '.join(PRESETS)}, or a JSON file)")  # fmt: skip
        if not path.is_file():
            raise unknown_name("search space", name_or_path, [*PRESETS, "<file>.json"])
        try:
            space = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    check_space(space)
    return space


def space_family(space: dict[str, Any]) -> Family:
    """The model family a space trains (see the module docstring)."""
    fixed = space.get("fixed", {})
    return choose_family(fixed.get("model"), fixed)


def check_space(space: dict[str, Any]) -> None:
    """The space's shape, its names against its family's options, and its fixed values and each
    parameter's first value against the family's checks (so a bad value fails at create time,
    not in a worker)."""
    if not isinstance(space, dict) or set(space) - {"params", "fixed"} or "params" not in space:
        raise ConfigError("a search space is a JSON object with 'params' and optionally 'fixed'")
    if not isinstance(space["params"], dict) or not isinstance(space.get("fixed", {}), dict):
        raise ConfigError("a search space's 'params' and 'fixed' are JSON objects (name: ...)")
    if not space["params"]:
        raise ConfigError("a search space's 'params' is empty: a study searches at least one "
                          "option (fixed values go in 'fixed')")  # fmt: skip
    for name, spec in space["params"].items():
        if not isinstance(spec, dict):
            raise ConfigError(f"parameter {name!r}: a JSON object like {{\"type\": \"float\", "
                              f"\"low\": ..., \"high\": ...}}, got {spec!r}")  # fmt: skip
    if "model" in space["params"]:
        raise ConfigError(
            "a study compares one model family's score: fix 'model', do not search it"
        )
    family = space_family(space)
    known = {f.name for f in fields(family.config_type)}
    for name in {**space["params"], **space.get("fixed", {})}:
        if name not in known | {"model"}:
            raise unknown_name("option", name, sorted(known))
    for name, spec in space["params"].items():
        if spec.get("type") not in TYPES:
            raise ConfigError(f"parameter {name!r}: type must be one of {', '.join(TYPES)}")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise ConfigError(f"parameter {name!r}: categorical needs choices, a non-empty "
                                  "JSON list")  # fmt: skip
            continue
        number = int if spec["type"] == "int" else (int, float)
        for bound in ("low", "high"):
            value = spec.get(bound)
            if not isinstance(value, number) or isinstance(value, bool):
                kind = "a whole number" if spec["type"] == "int" else "a number"
                raise ConfigError(f"parameter {name!r}: {bound} must be {kind}, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"parameter {name!r}: {bound} must be finite, got {value!r}")
        if not spec["low"] < spec["high"]:
            raise ConfigError(f"parameter {name!r}: needs low < high, got {spec['low']} and "
                              f"{spec['high']}")  # fmt: skip
        if (spec["type"] == "one_minus_log" or spec.get("log")) and not spec["low"] > 0:
            raise ConfigError(f"parameter {name!r}: a log-uniform range needs low > 0, got "
                              f"{spec['low']}")  # fmt: skip
    first = {name: _first(spec) for name, spec in space["params"].items()}
    base = {**space.get("fixed", {}), **first}
    run_config(base)
    for name, spec in space["params"].items():  # every choice and both ends of every range
        for value in _extremes(spec):
            try:
                run_config({**base, name: value})
            except RnnlabError as exc:
                raise ConfigError(f"parameter {name!r}: the value {value!r} is refused: "
                                  f"{exc}") from None  # fmt: skip


def _extremes(spec: dict[str, Any]) -> list[Any]:
    """The values a parameter can reach at its edges: each choice, or both bounds."""
    if spec["type"] == "categorical":
        return list(spec["choices"])
    if spec["type"] == "one_minus_log":
        return [1.0 - spec["low"], 1.0 - spec["high"]]
    return [spec["low"], spec["high"]]


def _first(spec: dict[str, Any]) -> Any:
    if spec["type"] == "categorical":
        return spec["choices"][0]
    if spec["type"] == "one_minus_log":
        return 1.0 - spec["low"]
    return spec["low"]


def run_config(options: dict[str, Any]) -> Any:
    """The family config of a trial from its options (fixed values and drawn parameters)."""
    return make_config(options)


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """One point of the space (the trial records the raw draws; ``one_minus_log`` is mapped)."""
    values: dict[str, Any] = {}
    for name, spec in space["params"].items():
        kind = spec["type"]
        if kind == "categorical":
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif kind == "int":
            values[name] = trial.suggest_int(
                name, spec["low"], spec["high"], log=spec.get("log", False)
            )
        elif kind == "float":
            values[name] = trial.suggest_float(
                name, spec["low"], spec["high"], log=spec.get("log", False)
            )
        else:  # one_minus_log
            values[name] = 1.0 - trial.suggest_float(
                f"one_minus_{name}", spec["low"], spec["high"], log=True
            )
    return values
