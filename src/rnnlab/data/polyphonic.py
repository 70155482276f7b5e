"""The four polyphonic music sets of Boulanger-Lewandowski et al. (ICML 2012), and user copies.

A piece is an 88-key binary piano roll, (T, 88) bool, key k = MIDI note 21 + k. The four standard
sets ship inside the package in a compact form (bit-packed rows, ``.npz``) converted from the widely
mirrored ``.mat`` files; each bundled file is verified against its SHA-256 on load.

Users can load their own copies in three formats (``load_polyphonic(path)``):

- ``.mat``: keys ``traindata``, ``validdata``, ``testdata``, each a 1 x N cell array of (T, 88)
  arrays;
- ``.pickle`` / ``.pkl``: Boulanger-Lewandowski's format, a dict ``train`` / ``valid`` / ``test`` of
  lists of pieces, each a list of frames, each a sequence of active MIDI note numbers (21-108).
  Read with an unpickler that refuses every global, so loading never runs code from the file;
- ``.npz`` (rnnlab's own): per split ``{split}_lengths`` (N,) and ``{split}_rolls``, the frames of
  all pieces concatenated, either (sum T, 88) 0/1 or bit-packed (sum T, 11) uint8 with
  ``packed=1``. Read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.errors import DataError, array_file_error, unknown_name

NUM_KEYS = 88
LOWEST_NOTE = 21  # MIDI number of the lowest piano key, A0
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class BundledSet:
    """A polyphonic set shipped with rnnlab."""

    title: str
    source_file: str  # the .mat file in the shared benchmark data it was converted from


BUNDLED: dict[str, BundledSet] = {
    "jsb": BundledSet("JSB Chorales", "JSB_Chorales.mat"),
    "nottingham": BundledSet("Nottingham", "Nottingham.mat"),
    "musedata": BundledSet("MuseData", "MuseData.mat"),
    "piano-midi": BundledSet("Piano-midi.de", "Piano_midi.mat"),
}


@dataclass
class PianoRolls:
    """A polyphonic dataset: for each split a list of (T, 88) bool piano rolls."""

    name: str
    source: str
    splits: dict[str, list[np.ndarray]]

    def stats(self) -> dict[str, dict[str, float]]:
        """Per split: pieces, frames, min / mean / max length, mean notes per frame."""
        out = {}
        for split, pieces in self.splits.items():
            lengths = np.array([len(p) for p in pieces])
            notes = sum(int(p.sum()) for p in pieces)
            out[split] = {
                "pieces": len(pieces),
                "frames": int(lengths.sum()),
                "min_length": int(lengths.min()),
                "mean_length": float(lengths.mean()),
                "max_length": int(lengths.max()),
                "notes_per_frame": notes / float(lengths.sum()),
            }
        return out


def dataset_names() -> list[str]:
    return list(BUNDLED)


def load_polyphonic(name_or_path: str | Path) -> PianoRolls:
    """A bundled set by name (``jsb``, ``nottingham``, ``musedata``, ``piano-midi``), a user's
    ``.mat`` / ``.pickle`` / ``.npz`` file by path, or the name of a set made by ``rnnlab data
    import-midi`` (in $RNNLAB_DATA, else ~/.cache/rnnlab/data)."""
    text = str(name_or_path)
    if text in BUNDLED:
        return _load_bundled(text)
    path = Path(text)
    loaders = {".mat": load_mat, ".pickle": load_pickle, ".pkl": load_pickle, ".npz": load_npz}
    if path.suffix.lower() in loaders:
        if path.is_dir():
            raise DataError(f"data file {path} is a directory, not a file")
        if path.exists() and not path.is_file():
            raise DataError(f"data file {path} is not a regular file (a device or pipe)")
        if not path.is_file():
            raise DataError(f"data file {path} does not exist")
        return loaders[path.suffix.lower()](path)
    imported = user_data_dir() / f"{text}.npz"  # sets made by `rnnlab data import-midi`
    if "/" not in text and imported.is_file():
        return load_npz(imported)
    raise unknown_name("dataset", text, [*BUNDLED, "<path>.mat", "<path>.pickle", "<path>.npz"])


def is_polyphonic(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names piano rolls: a bundled or imported set, a .mat or
    .pickle file, or an .npz file in rnnlab's roll format (checked by its array names)."""
    if name_or_path in BUNDLED:
        return True
    path = Path(name_or_path)
    suffix = path.suffix.lower()
    if suffix in (".mat", ".pickle", ".pkl"):
        return True
    if suffix == ".npz":
        if not path.is_file():
            return False  # nothing to tell by: the series family's reader names the missing file
        try:
            with np.load(path, allow_pickle=False) as npz:
                return "train_rolls" in npz.files
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            return True  # unreadable: let the roll reader say what is wrong with it
    return "/" not in name_or_path and (user_data_dir() / f"{name_or_path}.npz").is_file()


def user_data_dir() -> Path:
    """Where imported datasets live: $RNNLAB_DATA, else ~/.cache/rnnlab/data."""
    env = os.environ.get("RNNLAB_DATA")
    return Path(env) if env else Path.home() / ".cache" / "rnnlab" / "data"


# --- the bundled sets ---------------------------------------------------------------------------
_BUNDLE_PACKAGE = "rnnlab.data.bundled"


def _manifest() -> dict[str, Any]:
    text = resources.files(_BUNDLE_PACKAGE).joinpath("manifest.json").read_text()
    manifest: dict[str, Any] = json.loads(text)
    return manifest


def _load_bundled(name: str) -> PianoRolls:
    entry = _manifest()[name]
    resource = resources.files(_BUNDLE_PACKAGE).joinpath(entry["file"])
    blob = resource.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry["sha256"]:
        raise DataError(
            f"bundled data file {entry['file']} fails its checksum (sha256 {digest}, expected "
            f"{entry['sha256']}): the installation is damaged; reinstall rnnlab"
        )
    with resources.as_file(resource) as path:
        rolls = load_npz(path)
    return PianoRolls(name=name, source=f"bundled:{entry['file']}", splits=rolls.splits)


def build_bundle(source_dir: Path, dest_dir: Path) -> dict[str, Any]:
    """Convert the four ``.mat`` files of ``source_dir`` into the compact bundle in ``dest_dir``,
    with a manifest of checksums (source and bundle). Used once, by tools/make_bundle.py."""
    manifest: dict[str, Any] = {}
    for name, info in BUNDLED.items():
        src = source_dir / info.source_file
        rolls = load_mat(src)
        out = dest_dir / f"{name}.npz"
        save_npz(rolls, out)
        manifest[name] = {
            "file": out.name,
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "source_file": info.source_file,
            "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
            "pieces": {s: len(p) for s, p in rolls.splits.items()},
        }
    (dest_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# --- file formats ---------------------------------------------------------------------------------
def load_mat(path: Path) -> PianoRolls:
    """The MATLAB form of the benchmark files (see the module docstring)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DataError(f"{path}: not a readable .mat file ({exc})") from None
    splits = {}
    for split in SPLITS:
        key = f"{split}data"
        if key not in mat:
            raise DataError(f"{path}: no {key!r} array (keys: {_public_keys(mat)})")
        cells = np.asarray(mat[key], dtype=object).ravel()
        splits[split] = [_check_roll(np.asarray(c), path, split, i) for i, c in enumerate(cells)]
    return _finish(path, splits)


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Reads only plain containers and numbers: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_pickle(path: Path) -> PianoRolls:
    """Boulanger-Lewandowski's pickle of active MIDI notes (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            data = _NoGlobalsUnpickler(f, encoding="latin1").load()
    except Exception as exc:
        raise DataError(f"{path}: not a readable pickle of note lists ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict with keys {SPLITS}, got {type(data).__name__}")
    splits = {}
    for split in SPLITS:
        if split not in data:
            raise DataError(f"{path}: no {split!r} split (keys: {sorted(map(str, data))})")
        pieces = []
        if not isinstance(data[split], list | tuple):
            raise DataError(f"{path}: {split!r} must be a list of pieces, got "
                            f"{type(data[split]).__name__}")  # fmt: skip
        for i, piece in enumerate(data[split]):
            if not isinstance(piece, list | tuple):
                raise DataError(f"{path}: {split} piece {i} must be a list of frames, got "
                                f"{type(piece).__name__}")  # fmt: skip
            roll = np.zeros((len(piece), NUM_KEYS), dtype=bool)
            for t, frame in enumerate(piece):
                if not isinstance(frame, list | tuple):
                    raise DataError(f"{path}: {split} piece {i} frame {t} must be a list of "
                                    f"MIDI notes, got {type(frame).__name__}")  # fmt: skip
                for note in frame:
                    finite = isinstance(note, int | float | np.number) and np.isfinite(note)
                    if not finite or note != int(note):
                        raise DataError(
                            f"{path}: {split} piece {i} frame {t} has note {note!r}: MIDI notes "
                            "are whole numbers"
                        )
                    key = int(note) - LOWEST_NOTE
                    if not 0 <= key < NUM_KEYS:
                        raise DataError(
                            f"{path}: {split} piece {i} frame {t} has MIDI note {note}, "
                            f"outside the piano's {LOWEST_NOTE}-{LOWEST_NOTE + NUM_KEYS - 1}"
                        )
                    roll[t, key] = True
            pieces.append(_check_roll(roll, path, split, i))
        splits[split] = pieces
    return _finish(path, splits)


def load_npz(path: Path) -> PianoRolls:
    """rnnlab's ``.npz`` format (see the module docstring)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise array_file_error(path, ".npz", exc) from None
    flag = arrays.get("packed", np.array(0))
    if flag.shape != () or flag.dtype.kind not in "biu":
        raise DataError(f"{path}: 'packed' must be a single integer (0 or 1), got an array of "
                        f"shape {flag.shape} and type {flag.dtype}")  # fmt: skip
    packed = bool(flag)
    splits = {}
    for split in SPLITS:
        rolls_key, lengths_key = f"{split}_rolls", f"{split}_lengths"
        if rolls_key not in arrays or lengths_key not in arrays:
            raise DataError(
                f"{path}: needs arrays {rolls_key!r} and {lengths_key!r} (has {sorted(arrays)})"
            )
        rolls, lengths = arrays[rolls_key], arrays[lengths_key]
        if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
            raise DataError(f"{path}: {lengths_key} must be a 1-D array of whole numbers")
        lengths = lengths.astype(np.int64)
        if (lengths < 1).any():
            raise DataError(f"{path}: {lengths_key} holds {int(lengths.min())}: every piece "
                            "has at least one frame")  # fmt: skip
        if packed:
            width = (NUM_KEYS + 7) // 8
            if rolls.ndim != 2 or rolls.shape[1] != width or rolls.dtype != np.uint8:
                raise DataError(
                    f"{path}: {rolls_key} is packed as {rolls.shape} {rolls.dtype}; packed "
                    f"rows of {NUM_KEYS} keys are {width} bytes (uint8)"
                )
            rolls = np.unpackbits(rolls, axis=1, count=NUM_KEYS)
        if rolls.ndim != 2 or lengths.ndim != 1 or lengths.sum() != rolls.shape[0]:
            raise DataError(
                f"{path}: {split} lengths add up to {int(lengths.sum())} frames but the rolls "
                f"array has shape {rolls.shape}"
            )
        pieces = np.split(rolls, np.cumsum(lengths)[:-1]) if len(lengths) else []
        splits[split] = [_check_roll(p, path, split, i) for i, p in enumerate(pieces)]
    return _finish(path, splits)


def save_npz(rolls: PianoRolls, path: Path) -> None:
    """Write rolls in rnnlab's bit-packed ``.npz`` format."""
    arrays: dict[str, np.ndarray] = {"packed": np.array(1, dtype=np.uint8)}
    for split, pieces in rolls.splits.items():
        frames = np.concatenate(pieces).astype(bool)
        arrays[f"{split}_rolls"] = np.packbits(frames, axis=1)
        arrays[f"{split}_lengths"] = np.array([len(p) for p in pieces], dtype=np.int32)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def _check_roll(roll: np.ndarray, path: Path, split: str, index: int) -> np.ndarray:
    where = f"{path}: {split} piece {index}"
    if roll.ndim != 2 or roll.shape[1] != NUM_KEYS:
        raise DataError(f"{where} has shape {roll.shape}, expected (frames, {NUM_KEYS})")
    if roll.shape[0] == 0:
        raise DataError(f"{where} has no frames")
    if not np.isin(roll, (0, 1)).all():
        raise DataError(f"{where} holds values other than 0 and 1")
    return roll.astype(bool)


def _finish(path: Path, splits: dict[str, list[np.ndarray]]) -> PianoRolls:
    for split, pieces in splits.items():
        if not pieces:
            raise DataError(f"{path}: the {split} split is empty")
    return PianoRolls(name=path.stem, source=str(path), splits=splits)


def _public_keys(mat: dict[str, Any]) -> list[str]:
    return sorted(k for k in mat if not k.startswith("__"))
