"""The registry of model families (see ``rnnlab.families.base`` for the plugin contract).

Adding a family: write its module (config, Problem, Family subclass) and add one line here.
The order matters in one place only: the first family whose ``accepts`` takes a ``--data`` value
(among those ``implied_by_data``) is the one that value selects when ``--model`` is not given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnlab.errors import ConfigError, unknown_name
from rnnlab.families.base import Family, FamilyConfig, Problem, SampleRequest, Score
from rnnlab.families.conv_lm import GCNNLM, TCNLM
from rnnlab.families.ctc import CTCFamily
from rnnlab.families.gcnn import GCNNFamily
from rnnlab.families.lm import LM
from rnnlab.families.music import RNN, RNNNADE
from rnnlab.families.rnnrbm import RNNRBMFamily
from rnnlab.families.sentence import SentenceLM, SentenceVAEFamily
from rnnlab.families.series import SeriesFamily
from rnnlab.families.task import TaskFamily
from rnnlab.families.tcn import TCNFamily
from rnnlab.families.vrnn import VRNNFamily

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        RNN(),
        RNNNADE(),
        RNNRBMFamily(),
        TCNFamily(),
        GCNNFamily(),
        VRNNFamily(),
        TaskFamily(),
        LM(),
        TCNLM(),
        GCNNLM(),
        SentenceLM(),
        SentenceVAEFamily(),
        SeriesFamily(),
        CTCFamily(),
    )
}
DEFAULT_FAMILY = "rnn"


def family_names() -> list[str]:
    return list(FAMILIES)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise unknown_name("model", name, FAMILIES)
    return FAMILIES[name]


def family_of(cfg: FamilyConfig) -> Family:
    """The family a config belongs to."""
    return get_family(cfg.family)


def choose_family(model: str | None, options: dict[str, Any]) -> Family:
    """The family of ``rnnlab train``: ``--model`` if given, else the one ``--data`` implies
    (the default family with no ``--data``). A ``--model`` that cannot train on the given data
    is an error naming what the data is and what the model takes."""
    data = options.get("data")
    if model is not None:
        family = get_family(model)
        if data is not None and not family.accepts(data, options):
            owner = _implied(data, options)
            what = f"is data of the {owner.name} family" if owner else "is not a dataset it knows"
            raise ConfigError(
                f"--model {family.name} cannot train on --data {data!r} ({what}); "
                f"{family.name} takes {family.data_help()}"
            )
        return family
    if data is None:
        return FAMILIES[DEFAULT_FAMILY]
    owner = _implied(data, options)
    if owner is None:
        if "." in Path(data).name:  # a file of a kind no family reads
            takes = "; ".join(f"{f.name}: {f.data_help()}" for f in FAMILIES.values()
                              if f.implied_by_data)  # fmt: skip
            raise ConfigError(f"--data {data}: not a kind of file rnnlab reads ({takes})")
        names = list(dict.fromkeys(n for f in FAMILIES.values() for n in f.known_data()))
        raise unknown_name("dataset", data, [*names, "<file>.csv", "<file>.npz", "<file>.mat"])
    return owner


def make_config(options: dict[str, Any], family: Family | None = None) -> Any:
    """A family's resolved config from options named as ``rnnlab train``'s (``model`` among
    them to choose the family; else ``family``, or what ``data`` implies), checked together.

    >>> make_config({"data": "adding", "hidden_size": 32}).seq_len   # the task's own T, resolved
    600
    """
    options = dict(options)
    model = options.pop("model", None)
    family = family or choose_family(model, options)
    cfg = family.config_type(**options)
    cfg.check_given(options)
    return family.resolve(cfg)


def _implied(data: str, options: dict[str, Any]) -> Family | None:
    return next((f for f in FAMILIES.values() if f.implied_by_data and f.accepts(data, options)),
                None)  # fmt: skip


__all__ = [
    "FAMILIES",
    "Family",
    "FamilyConfig",
    "Problem",
    "SampleRequest",
    "Score",
    "choose_family",
    "family_names",
    "family_of",
    "get_family",
    "make_config",
]
