"""Errors reported to a user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RnnlabError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class ConfigError(RnnlabError, ValueError):
    """A bad name, option or value."""


class ConfigTypeError(ConfigError, TypeError):
    """A value of the wrong type (a string where a number belongs, None for a name)."""


class DataError(RnnlabError):
    """A data file that is missing, empty, corrupt or in the wrong format."""


class RunDirError(RnnlabError):
    """A directory that is not a run directory, or one that would be overwritten."""


class TrainingDiverged(RnnlabError):
    """The loss or the gradient became NaN or infinite."""


def array_file_error(path: object, kind: str, exc: Exception) -> DataError:
    """numpy's refusal of an array file (.npy, .npz) as one line. A file that is not a zip or
    .npy (a text file, say) is taken by numpy for a pickle, which rnnlab never loads."""
    if "pickled" in str(exc):
        return DataError(f"{path}: not a plain array file: numpy reads it as pickled objects "
                         f"(or it is not an {kind} file at all), and rnnlab loads only arrays "
                         "saved with numpy.save / numpy.savez")  # fmt: skip
    return DataError(f"{path}: not a readable {kind} file ({exc})")


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> ConfigError:
    """An error for an unknown name that lists the valid ones and suggests the closest."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")
