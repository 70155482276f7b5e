"""Real-valued time series: reading, splitting by time, normalising, baselines and metrics.

A series is one or more sequences of real vectors, each a float64 array (T_i, D). Three file
formats are read (``read_series(path)``):

- ``.csv``: a header row, then one row per time step. The value columns are chosen by name (by
  default every column but the id and time columns); an optional id column splits the rows into
  sequences, and an optional time column gives each step's time stamp (strictly increasing
  within a sequence: irregular steps). Every value must be a finite number: a missing cell is
  an error, never silently filled;
- ``.npy``: one sequence, shape (T,) (then D = 1) or (T, D);
- ``.npz``: one sequence per array, each (T,) or (T, D) with the same D, ordered by key. Read with
  ``allow_pickle=False``, so loading never runs code from the file.

Forecasts are judged against two baselines (the last value repeated, and the seasonal naive
forecast, which repeats the last season) by the mean absolute error and, for forecasts given as
samples, the continuous ranked probability score (CRPS) of Gneiting & Raftery (2007).

>>> import numpy as np
>>> history = np.array([[1.0], [2.0], [3.0], [4.0]])
>>> seasonal_naive(history, horizon=3, season=2)[:, 0]
array([3., 4., 3.])
>>> float(mae(seasonal_naive(history, 2, 1), np.array([[5.0], [6.0]])))
1.5
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from rnnlab.errors import ConfigError, DataError, array_file_error

SUFFIXES = (".csv", ".npy", ".npz")
MIN_STEPS = 2  # a sequence needs one step to condition on and one to predict
# Values beyond this magnitude are refused: their squares (the standard deviation, the season's
# autocorrelation) overflow float64 from about 1e154, and the model's float32 ends at 3.4e38.
MAX_VALUE = 1e30
SEASON_MIN_ACF = 0.3  # detect_season: a weaker autocorrelation peak means no season
SEASON_NEAR_BEST = 0.9  # detect_season: a shorter peak this close to the highest one wins
SEASON_MAX_LAG = 400  # detect_season: the default longest period searched


@dataclass(frozen=True)
class Series:
    """A real-valued series read from one file.

    ``sequences[i]`` is a float64 array (T_i, D), one row per time step, with column names
    ``columns`` (the CSV header names; ``x0``, ``x1``, ... for arrays) and id ``ids[i]`` (the id
    column's value, the ``.npz`` key, or ``"0"`` for a single sequence). ``sha256`` is the digest of
    the file's bytes as read (empty for a series built in memory).
    """

    name: str
    source: str
    columns: list[str]
    sequences: list[np.ndarray]
    ids: list[str]
    sha256: str = ""
    # Each sequence's time stamps (T_i,) float64, strictly increasing, or None for regular steps
    # (a time column, or the kept steps' indices after ``subsample``).
    times: list[np.ndarray] | None = None

    @property
    def dim(self) -> int:
        """D, the number of value columns."""
        return len(self.columns)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready record of what was read, for a run directory."""
        lengths = np.array([len(s) for s in self.sequences])
        return {
            "name": self.name,
            "source": self.source,
            "columns": list(self.columns),
            "dim": self.dim,
            "num_sequences": len(self.sequences),
            "num_steps": int(lengths.sum()),
            "length_min": int(lengths.min()),
            "length_mean": float(lengths.mean()),
            "length_max": int(lengths.max()),
            "sha256": self.sha256,
        }


def read_series(
    path: str | Path,
    columns: list[str] | None = None,
    id_column: str | None = None,
    time_column: str | None = None,
) -> Series:
    """Read a ``.csv``, ``.npy`` or ``.npz`` series (see the module docstring).

    ``columns`` and ``id_column`` apply to CSV files only: the value columns, in the order given
    (default: every column except ``id_column``), and the column whose value names the sequence a
    row belongs to (rows of one id keep their file order; ids come in order of first appearance).
    Any problem raises a ``DataError`` that names the file and, for a CSV cell, its 1-based line
    number, column and text.
    """
    source = str(path)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; "
            f"a series is read from {', '.join(SUFFIXES)}"
        )
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if path.is_dir():
        raise DataError(f"data file {path} is a directory, not a file")
    if not path.is_file():
        raise DataError(f"data file {path} is not a regular file (a device or pipe)")
    if suffix != ".csv" and (columns is not None or id_column is not None):
        raise DataError(f"{path}: columns and id_column apply to .csv files only")
    if suffix != ".csv" and time_column is not None:
        raise DataError(f"{path}: a time column applies to .csv files only (arrays have regular "
                        "steps; subsampling makes them irregular)")  # fmt: skip
    blob = path.read_bytes()
    if not blob.strip():
        raise DataError(f"{path} is empty")
    times = None
    if suffix == ".csv":
        if time_column is not None and time_column == id_column:
            raise DataError(f"{path}: {time_column!r} cannot be both the id and the time column")
        names, sequences, ids = _parse_csv(blob, path, columns, id_column, time_column)
        if time_column is not None:
            sequences, times = _split_times(sequences, path, time_column, ids)
            names = names[1:]
    else:
        sequences, ids = _parse_npy(blob, path) if suffix == ".npy" else _parse_npz(blob, path)
        names = [f"x{j}" for j in range(sequences[0].shape[1])]
    return Series(
        name=path.stem,
        source=source,
        columns=names,
        sequences=sequences,
        ids=ids,
        sha256=hashlib.sha256(blob).hexdigest(),
        times=times,
    )


def _split_times(
    sequences: list[np.ndarray], path: Path, time_column: str, ids: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The time column (read as the first value column) split off; stamps must increase."""
    values, times = [], []
    for seq, key in zip(sequences, ids, strict=True):
        t = seq[:, 0]
        steps = np.diff(t)
        if (steps <= 0).any():
            k = int(np.argmax(steps <= 0))
            whose = f"sequence {key!r}" if len(ids) > 1 else "the series"
            raise DataError(f"{path}: the time column {time_column!r} must increase strictly "
                            f"within {whose}; step {k + 1} (0-based) has {t[k + 1]:g} after "
                            f"{t[k]:g}")  # fmt: skip
        values.append(seq[:, 1:])
        times.append(t)
    return values, times


def subsample(series: Series, keep: float, seed: int) -> Series:
    """An irregular series from ``series``: round(keep * T_i) of each sequence's steps (at least
    2), chosen uniformly at random without replacement by ``seed``, in time order, with their
    time stamps (the series' own, or the steps' indices for a regular series), as the CRU paper
    makes its irregular benchmarks (Schirmer et al. 2022, sec. 5)."""
    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"the share of steps to keep must lie in (0, 1], got {keep}")
    rng = np.random.default_rng(seed)
    sequences, times = [], []
    for k, seq in enumerate(series.sequences):
        stamps = series.times[k] if series.times is not None else np.arange(len(seq), dtype=float)
        n = max(MIN_STEPS, round(keep * len(seq)))
        kept = np.sort(rng.choice(len(seq), size=n, replace=False))
        sequences.append(seq[kept])
        times.append(stamps[kept])
    return Series(name=series.name, source=series.source, columns=series.columns,
                  sequences=sequences, ids=series.ids, sha256=series.sha256,
                  times=times)  # fmt: skip


# --- CSV ------------------------------------------------------------------------------------------
def _parse_csv(
    blob: bytes,
    path: Path,
    columns: list[str] | None,
    id_column: str | None,
    time_column: str | None = None,
) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Names, sequences and ids; with a time column, it comes first in names and sequences."""
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path} is empty")
    header = [name.strip() for name in rows[0][1]]
    body = rows[1:]
    _check_header(header, path)
    for line, row in body:
        if len(row) != len(header):
            raise DataError(
                f"{path} line {line} has {len(row)} fields, the header has {len(header)}"
            )
    if not body:
        raise DataError(f"{path} has a header but no data rows")

    if id_column is not None and id_column not in header:
        raise _unknown_column(path, id_column, header, "id column")
    if time_column is not None and time_column not in header:
        raise _unknown_column(path, time_column, header, "time column")
    if columns is None:
        columns = [name for name in header if name not in (id_column, time_column)]
        _check_numeric(path, header, columns, body[0])
    else:
        for name in columns:
            if name not in header:
                raise _unknown_column(path, name, header, "column")
        if len(set(columns)) != len(columns):
            raise DataError(f"{path}: a value column is named twice in {columns}")
        if id_column in columns:
            raise DataError(f"{path}: {id_column!r} is the id column and cannot be a value column")
        if time_column in columns:
            raise DataError(f"{path}: {time_column!r} is the time column and cannot be a value "
                            "column")  # fmt: skip
    if not columns:
        keys = " and ".join(repr(c) for c in (id_column, time_column) if c is not None)
        raise DataError(f"{path} has no value columns (only {keys})")

    if time_column is not None:
        columns = [time_column, *columns]
    where = [header.index(name) for name in columns]
    id_at = header.index(id_column) if id_column is not None else None
    groups: dict[str, list[list[float]]] = {}
    for line, row in body:
        key = "0"
        if id_at is not None:
            key = row[id_at].strip()
            if not key:
                raise DataError(f"{path} line {line}, column {id_column!r}: the id is missing")
        groups.setdefault(key, []).append(
            [_parse_cell(row[j], path, line, header[j]) for j in where]
        )
    for key, steps in groups.items():
        if len(steps) < MIN_STEPS:
            whose = f"sequence {key!r}" if id_at is not None else "the series"
            raise DataError(
                f"{path}: {whose} has {len(steps)} step; a sequence needs at least {MIN_STEPS}"
            )
    sequences = [np.array(steps, dtype=np.float64) for steps in groups.values()]
    return list(columns), sequences, list(groups)


def _check_header(header: list[str], path: Path) -> None:
    for j, name in enumerate(header):
        if not name:
            raise DataError(
                f"{path} line 1: header field {j + 1} is empty; every column needs a name"
            )
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path} line 1: the column name {name!r} appears twice")
        seen.add(name)


def _check_numeric(
    path: Path, header: list[str], columns: list[str], first: tuple[int, list[str]]
) -> None:
    """Without an explicit choice of columns, a column whose first value is text (a date, a label)
    is reported as a whole, with the numeric columns to choose from."""
    line, row = first
    text = {name: row[header.index(name)].strip() for name in columns}
    bad = [name for name, cell in text.items() if cell and not _is_float(cell)]
    if bad:
        good = [name for name in columns if name not in bad and _is_float(text[name])]
        shown = ", ".join(f"column {name!r} holds {text[name]!r}" for name in bad)
        choice = (
            f"choose the value columns with --columns (columns=[...] in Python); numeric columns "
            f"on that line: {', '.join(repr(name) for name in good)}"
            if good
            else "no column of that line is numeric"
        )
        raise DataError(f"{path} line {line}: not numeric: {shown}; {choice}")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_cell(cell: str, path: Path, line: int, column: str) -> float:
    where = f"{path} line {line}, column {column!r}"
    text = cell.strip()
    if not text:
        raise DataError(f"{where}: {cell!r} is an empty cell (a missing value); fill or drop it")
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {cell!r} is not a finite number")
    if abs(value) > MAX_VALUE:
        raise DataError(f"{where}: {cell!r} is beyond +-{MAX_VALUE:g}; rescale the column")
    return value


def _unknown_column(path: Path, name: str, header: list[str], kind: str) -> DataError:
    close = difflib.get_close_matches(name, header, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    valid = ", ".join(repr(h) for h in header)
    return DataError(f"{path}: no {kind} {name!r}.{hint} The columns are: {valid}")


# --- arrays ---------------------------------------------------------------------------------------
_NPY_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def _parse_npy(blob: bytes, path: Path) -> tuple[list[np.ndarray], list[str]]:
    try:
        array = np.load(io.BytesIO(blob), allow_pickle=False)
    except _NPY_ERRORS as exc:
        raise array_file_error(path, ".npy", exc) from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: holds an .npz archive, not one array; name it .npz")
    return [_check_array(array, str(path))], ["0"]


def _parse_npz(blob: bytes, path: Path) -> tuple[list[np.ndarray], list[str]]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in sorted(npz.files)}
    except _NPY_ERRORS as exc:
        raise array_file_error(path, ".npz", exc) from None
    if not arrays:
        raise DataError(f"{path}: the archive holds no arrays")
    sequences = [_check_array(array, f"{path}: array {key!r}") for key, array in arrays.items()]
    dims = {key: s.shape[1] for key, s in zip(arrays, sequences, strict=True)}
    if len(set(dims.values())) > 1:
        raise DataError(f"{path}: the arrays have different numbers of columns: {dims}")
    return sequences, list(arrays)


def _check_array(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {array.dtype}; expected real numbers")
    if array.ndim not in (1, 2):
        raise DataError(f"{where} has shape {array.shape}; expected (T,) or (T, D)")
    if len(array) == 0:
        raise DataError(f"{where} is empty (shape {array.shape}); a sequence needs at least "
                        f"{MIN_STEPS} steps")  # fmt: skip
    values = array.astype(np.float64).reshape(len(array), -1)  # (T, D)
    if values.shape[1] == 0:
        raise DataError(f"{where} has shape {array.shape}: no columns")
    if len(values) < MIN_STEPS:
        raise DataError(f"{where} has {len(values)} step; a sequence needs at least {MIN_STEPS}")
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        t, j = bad[0]
        raise DataError(
            f"{where} holds {values[t, j]} at step {t}, column {j} (0-based); "
            f"every value must be finite ({len(bad)} are not)"
        )
    huge = np.argwhere(np.abs(values) > MAX_VALUE)
    if len(huge):
        t, j = huge[0]
        raise DataError(f"{where} holds {values[t, j]:g} at step {t}, column {j} (0-based), "
                        f"beyond +-{MAX_VALUE:g}; rescale the column")  # fmt: skip
    return values


# --- splits and normalisation ---------------------------------------------------------------------
def time_splits(length: int, valid: float = 0.15, test: float = 0.15) -> dict[str, tuple[int, int]]:
    """The half-open step ranges ``[start, stop)`` of train, valid and test, split by time.

    valid and test get ``round(fraction * length)`` steps each (halves round up), train the rest,
    in the order train, valid, test. Each split must be non-empty; the error for a sequence too
    short says from which length on every length works.

    >>> time_splits(100)
    {'train': (0, 70), 'valid': (70, 85), 'test': (85, 100)}
    """
    for name, fraction in (("valid", valid), ("test", test)):
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"the {name} fraction must lie in (0, 1), got {fraction}")
    if valid + test >= 1.0:
        raise ConfigError(
            f"valid + test must be below 1 to leave training steps, got {valid + test}"
        )

    def sizes(n: int) -> tuple[int, int, int]:
        n_valid, n_test = math.floor(valid * n + 0.5), math.floor(test * n + 0.5)
        return n - n_valid - n_test, n_valid, n_test

    if min(sizes(length)) < 1:
        # Every length from ``needed`` on works: valid and test need fraction * n >= 1/2, train
        # n (1 - valid - test) - 1 >= 1; walk down from that bound while the lengths still work.
        bound = 2 + math.ceil(max(0.5 / valid, 0.5 / test, 2 / (1 - valid - test)))
        needed = bound
        while needed > 3 and min(sizes(needed - 1)) >= 1:
            needed -= 1
        raise DataError(
            f"a sequence of {length} steps is too short to split by time into train / valid / "
            f"test with valid={valid}, test={test} (sizes {sizes(length)}); "
            f"it needs at least {needed} steps"
        )
    n_train, n_valid, _ = sizes(length)
    return {
        "train": (0, n_train),
        "valid": (n_train, n_train + n_valid),
        "test": (n_train + n_valid, length),
    }


ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Normaliser:
    """Per-column affine normalisation z = (x - mean) / std.

    The Jacobian of x -> z is diag(1 / std), so a density over z gives one over x by
    log p(x) = log p(z) - log_det, with ``log_det = sum_j log std_j`` per time step (subtract
    T * log_det for a sequence of T steps). ``apply`` and ``invert`` take numpy arrays or torch
    tensors of shape (..., D) and return the same kind.

    >>> norm = Normaliser.fit([np.array([[1.0, 5.0], [3.0, 5.0]])])
    >>> norm.mean, norm.std
    ([2.0, 5.0], [1.0, 1.0])
    """

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, arrays: Sequence[np.ndarray] | np.ndarray) -> Normaliser:
        """Mean and population standard deviation of each column over all rows of ``arrays``
        (each (T_i, D); a single array counts as one). A constant column gets std 1."""
        if isinstance(arrays, np.ndarray):
            arrays = [arrays]
        if not len(arrays) or any(np.ndim(a) != 2 for a in arrays):
            raise DataError("Normaliser.fit needs a non-empty list of (T, D) arrays")
        rows = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays])  # (sum T, D)
        if not len(rows):
            raise DataError("Normaliser.fit was given no rows")
        mean, std = rows.mean(axis=0), rows.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return cls(mean=[float(m) for m in mean], std=[float(s) for s in std])

    def apply(self, x: ArrayT) -> ArrayT:
        """z = (x - mean) / std over the last axis."""
        mean, std = self._like(x)
        return (x - mean) / std

    def invert(self, z: ArrayT) -> ArrayT:
        """x = mean + std * z over the last axis."""
        mean, std = self._like(z)
        return z * std + mean

    def log_det(self) -> float:
        """sum_j log std_j: log p(x) = log p(z) - log_det for one time step."""
        return float(np.log(np.asarray(self.std)).sum())

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normaliser:
        """The inverse of ``to_dict``; an unknown or missing key is named in a DataError."""
        for key in data:
            if key not in ("mean", "std"):
                raise DataError(f"normaliser: unknown key {key!r} (valid keys: 'mean', 'std')")
        for key in ("mean", "std"):
            if key not in data:
                raise DataError(f"normaliser: the key {key!r} is missing")
        mean, std = [float(m) for m in data["mean"]], [float(s) for s in data["std"]]
        if len(mean) != len(std) or not all(s > 0 and math.isfinite(s) for s in std):
            raise DataError(f"normaliser: needs as many means as stds, every std > 0; got {data}")
        return cls(mean=mean, std=std)

    def _like(self, x: ArrayT) -> tuple[ArrayT, ArrayT]:
        if x.shape[-1] != len(self.mean):
            raise DataError(
                f"the normaliser was fitted to {len(self.mean)} columns, the data has {x.shape[-1]}"
            )
        if isinstance(x, torch.Tensor):
            return x.new_tensor(self.mean), x.new_tensor(self.std)
        return np.asarray(self.mean), np.asarray(self.std)


# --- seasons and baselines ------------------------------------------------------------------------
def detect_season(values: np.ndarray, max_lag: int | None = None) -> int:
    """The seasonal period of a training stretch ``values`` (T, D) or (T,), or 1 for none.

    Each column has its least-squares line removed, then its sample autocorrelation is taken,
    r_k = sum_t e_t e_{t+k} / sum_t e_t^2 (the usual estimator, which damps long lags by
    (T - k) / T), and averaged over columns. Among lags 2 <= k <= max_lag (default
    min(T // 3, 400)) that are local maxima of r (r_{k-1} < r_k >= r_{k+1}), the highest one
    decides: if its r_k >= 0.3, the period is the shortest local maximum with r at least 0.3 and
    at least 0.9 times that highest r_k; otherwise there is no season and the result is 1. The
    10% allowance is there because sampling noise in r (about 1 / sqrt(T)) can lift a multiple of
    the period (lag 24 of a monthly series) a little above the period itself.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x.reshape(len(x), -1)  # (T, D)
    if not np.isfinite(x).all():
        raise ValueError("detect_season: the values must be finite")
    steps = len(x)
    max_lag = min(steps // 3, SEASON_MAX_LAG) if max_lag is None else max_lag
    max_lag = min(max_lag, steps - 2)  # r_{k+1} must exist
    if max_lag < 2:
        return 1
    t = np.arange(steps, dtype=np.float64)
    design = np.stack([np.ones(steps), t], axis=1)  # (T, 2)
    coef, *_ = np.linalg.lstsq(design, x, rcond=None)
    e = x - design @ coef  # (T, D) residuals around each column's line
    power = (e**2).sum(axis=0)  # (D,)
    keep = power > 1e-20 * (x**2).sum(axis=0)  # a constant or straight column has no season
    if not keep.any():
        return 1
    e = e[:, keep]
    n_fft = 1 << (2 * steps - 1).bit_length()  # zero padding: a linear, not circular, correlation
    spectrum = np.fft.rfft(e, n=n_fft, axis=0)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), n=n_fft, axis=0)[: max_lag + 2]
    r = (acov / power[keep]).mean(axis=1)  # (max_lag + 2,), r[0] = 1
    lags = np.arange(2, max_lag + 1)
    peaks = lags[(r[lags] > r[lags - 1]) & (r[lags] >= r[lags + 1])]
    if not len(peaks):
        return 1
    highest = float(r[peaks].max())
    if highest < SEASON_MIN_ACF:
        return 1
    return int(peaks[r[peaks] >= SEASON_NEAR_BEST * highest][0])


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The seasonal naive forecast: the last season of ``history``, repeated.

    For history y_1 .. y_T, y_hat_{T+h} = y_{T+h-season*ceil(h/season)}, h = 1 .. horizon; with
    season 1 that is the last value repeated (the naive forecast). ``history`` (T, D) or (T,);
    returns (horizon, D) or (horizon,).
    """
    history = np.asarray(history)
    if season < 1 or horizon < 0:
        raise ValueError(
            f"seasonal_naive needs season >= 1 and horizon >= 0, got {season}, {horizon}"
        )
    if len(history) < season:
        raise DataError(
            f"a history of {len(history)} steps is shorter than the season of {season} steps; "
            f"the seasonal naive forecast needs one full season"
        )
    h = np.arange(1, horizon + 1)
    # 0-based index of y_{T+h-season*ceil(h/season)}: T - season + (h - 1) mod season
    return history[len(history) - season + (h - 1) % season]


# --- metrics --------------------------------------------------------------------------------------
def crps_from_samples(samples: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The continuous ranked probability score of a forecast given by N samples, per element.

    In the energy form of Gneiting & Raftery (2007, JASA 102(477), eq. 20),
    CRPS(F, y) = E|X - y| - 1/2 E|X - X'|, X, X' ~ F independent, with F the empirical
    distribution of the samples x_1 .. x_N. With the samples sorted, x_(1) <= .. <= x_(N),
    E|X - X'| = 2 / N^2 * sum_i (2i - N - 1) x_(i), which costs O(N log N) instead of the
    O(N^2) sum over pairs. Lower is better; for N = 1 the score is |x - y| (the absolute error).
    This is the CRPS of the empirical distribution itself; the "fair" estimator of the CRPS of
    the distribution the samples come from would divide the pair term by N (N - 1) instead.

    ``samples`` (N, ...), ``y`` (...); returns (...) float64.
    """
    x = np.asarray(samples, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(
            f"crps_from_samples needs samples of shape (N, ...), N >= 1; got {x.shape}"
        )
    if x.shape[1:] != y.shape:
        raise ValueError(f"samples {x.shape} do not match y {y.shape}: expected (N, *y.shape)")
    n = len(x)
    abs_error = np.abs(x - y).mean(axis=0)
    weights = (2 * np.arange(1, n + 1) - n - 1).reshape(-1, *([1] * y.ndim))  # (N, 1, ...)
    spread = 2.0 / n**2 * (weights * np.sort(x, axis=0)).sum(axis=0)  # E|X - X'|
    crps: np.ndarray = abs_error - 0.5 * spread
    return crps


def mae(forecast: np.ndarray, y: np.ndarray) -> float:
    """The mean absolute error, mean |forecast - y| over all elements (shapes must match)."""
    forecast, y = np.asarray(forecast, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if forecast.shape != y.shape:
        raise ValueError(f"forecast {forecast.shape} and y {y.shape} have different shapes")
    return float(np.abs(forecast - y).mean())
