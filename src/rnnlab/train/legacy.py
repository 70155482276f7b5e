"""Run directories written before the model families (config.json format 1:
``{"model": {...}, "train": {...}}``, two union configs). They load as they are (the family and
its options are read off the old config, the assets rebuilt from the data it names), and
``rnnlab upgrade RUN`` rewrites them in the current format, keeping the old file as
``config.v1.json``.

This module is the one place that reads a family off the old ``model`` field: the old format
recorded no family.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from rnnlab.data.tasks import is_task
from rnnlab.errors import RunDirError
from rnnlab.train.checkpoint import CONFIG

# What the old code built for the sentence models whatever the config said (it passed only the
# cell and the backend to their Recurrent stacks): the upgrade records it, so the weights fit.
_OLD_SENTENCE_STACK = {"num_layers": 1, "layer_norm": False, "recurrent_dropout": 0.0,
                       "zoneout": 0.0, "chrono": 0, "forget_bias": 1.0}  # fmt: skip


def upgrade_config(document: dict[str, Any], run: Path) -> tuple[str, dict[str, Any]]:
    """The family name and its options for an old config.json."""
    from rnnlab.families import get_family

    if set(document) != {"model", "train"}:
        raise RunDirError(f"{run / CONFIG}: neither the current format nor rnnlab's old one")
    model, train = dict(document["model"]), dict(document["train"])
    name = _family_name(model, train)
    options = {**train, **model}
    if name.startswith("sentence-"):
        options |= _OLD_SENTENCE_STACK
    known = {f.name for f in fields(get_family(name).config_type)}
    return name, {k: v for k, v in options.items() if k in known}


def _family_name(model: dict[str, Any], train: dict[str, Any]) -> str:
    kind = model.get("model", "rnn")
    if is_task(str(train.get("data", ""))):
        return "task"
    if kind == "rnn":
        if model.get("output", "bernoulli") not in ("bernoulli", "nade"):
            raise RunDirError("an old music run with a real-valued output has no family now")
        return "rnn-nade" if model.get("output") == "nade" else "rnn"
    return str(kind)
