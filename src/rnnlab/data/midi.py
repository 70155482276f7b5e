"""MIDI in and out: piano rolls from MIDI files, MIDI files and pictures from piano rolls.

Rolls have 88 columns, MIDI pitches 21 (A0) to 108 (C8), one row per frame. Reading quantises on
the file's own beats (its tempo map): ``frames_per_beat`` frames per quarter-note beat, a key held
in a frame when a note covers the frame's midpoint (the polyphonic benchmarks use quarter- or
eighth-note frames). ``transpose`` moves each piece to C major or C minor, the key estimated by
the Krumhansl-Schmuckler method (the duration-weighted pitch-class histogram correlated with the
Krumhansl-Kessler profiles), as Boulanger-Lewandowski et al. prepared their sets.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from rnnlab.data.polyphonic import NUM_KEYS, PianoRolls
from rnnlab.errors import DataError

LOWEST = 21  # MIDI pitch of column 0 (A0)
# Krumhansl & Kessler (1982) key profiles, tonic first.
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MIDI_SUFFIXES = (".mid", ".midi")


def _pretty_midi():  # type: ignore[no-untyped-def]
    import pretty_midi  # imported on use: only the MIDI commands need it

    return pretty_midi


def estimate_key(histogram: np.ndarray) -> tuple[int, str]:
    """(tonic pitch class 0-11, "major" or "minor") of a 12-bin pitch-class histogram."""
    best = (-np.inf, 0, "major")
    for mode, profile in (("major", MAJOR), ("minor", MINOR)):
        for tonic in range(12):
            r = np.corrcoef(histogram, np.roll(profile, tonic))[0, 1]
            if r > best[0]:
                best = (r, tonic, mode)
    return best[1], best[2]


def read_midi(path: Path, frames_per_beat: int = 2, transpose: bool = False) -> np.ndarray:
    """One piece as a (T, 88) bool roll. Raises DataError naming the file when it cannot be read
    or has no notes."""
    pm_mod = _pretty_midi()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns about odd but readable files
            pm = pm_mod.PrettyMIDI(str(path))
    except Exception as exc:  # any parser failure means the file is unusable
        raise DataError(f"{path}: not a readable MIDI file ({type(exc).__name__}: {exc})") from None
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    if not notes:
        raise DataError(f"{path}: no notes (outside drum tracks)")
    shift = 0
    if transpose:
        histogram = np.zeros(12)
        for n in notes:
            histogram[n.pitch % 12] += n.end - n.start
        tonic, _ = estimate_key(histogram)
        shift = -tonic if tonic <= 6 else 12 - tonic  # the smaller move to C
    beats = pm.get_beats()
    end = max(n.end for n in notes)
    if len(beats) < 2:
        beats = np.arange(0.0, end + 0.5, 0.5)  # no tempo information: 120 bpm
    step = np.diff(beats)
    while beats[-1] < end:  # extend the grid past the last note with the last beat length
        beats = np.append(beats, beats[-1] + step[-1])
    edges = np.concatenate(
        [beats[i] + step_len * np.arange(frames_per_beat) / frames_per_beat
         for i, step_len in enumerate(np.diff(beats))]
    )  # fmt: skip
    mids = edges + np.diff(np.append(edges, beats[-1])) / 2
    roll = np.zeros((len(edges), NUM_KEYS), dtype=bool)
    for n in notes:
        key = n.pitch + shift - LOWEST
        if not 0 <= key < NUM_KEYS:
            continue
        roll[(mids >= n.start) & (mids < n.end), key] = True
    played = np.nonzero(roll.any(1))[0]
    if len(played) == 0:
        raise DataError(
            f"{path}: no notes inside the 88 keys on the {frames_per_beat}-per-beat grid"
        )
    return roll[played[0] : played[-1] + 1]


def import_midi_dir(
    directory: Path,
    name: str,
    frames_per_beat: int = 2,
    transpose: bool = False,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[PianoRolls, list[str]]:
    """Every MIDI file under ``directory`` (recursively) as a dataset with train/valid/test splits
    (files shuffled by ``seed``). Returns the rolls and a warning line per skipped file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES)
    if not files:
        raise DataError(f"{directory} holds no .mid or .midi files")
    pieces, skipped = [], []
    for path in files:
        try:
            pieces.append(read_midi(path, frames_per_beat, transpose))
        except DataError as exc:
            skipped.append(f"skipped {exc}")
    if len(pieces) < 3:
        raise DataError(
            f"{directory}: {len(pieces)} readable MIDI file(s); train, valid and test need 3"
        )
    if len(splits) != 3 or min(splits) <= 0:
        raise DataError(f"splits must be three positive fractions, got {splits}")
    order = np.random.default_rng(seed).permutation(len(pieces))
    total = sum(splits)
    n_valid = max(1, round(len(pieces) * splits[1] / total))
    n_test = max(1, round(len(pieces) * splits[2] / total))
    n_train = len(pieces) - n_valid - n_test
    parts = {
        "train": order[:n_train],
        "valid": order[n_train : n_train + n_valid],
        "test": order[n_train + n_valid :],
    }
    source = f"MIDI files under {directory}, {frames_per_beat} frames per beat" + (
        ", transposed to C" if transpose else ""
    )
    rolls = PianoRolls(name, source, {k: [pieces[i] for i in idx] for k, idx in parts.items()})
    return rolls, skipped


def write_midi(roll: np.ndarray, path: Path, frames_per_beat: int = 2, bpm: float = 100.0) -> None:
    """A (T, 88) roll as a one-track piano MIDI file; a key held over consecutive frames is one
    note."""
    pm_mod = _pretty_midi()
    pm = pm_mod.PrettyMIDI(initial_tempo=bpm)
    piano = pm_mod.Instrument(program=0, name="rnnlab")
    frame = 60.0 / bpm / frames_per_beat
    roll = np.asarray(roll, dtype=bool)
    padded = np.vstack([np.zeros((1, NUM_KEYS), bool), roll, np.zeros((1, NUM_KEYS), bool)])
    change = np.diff(padded.astype(np.int8), axis=0)  # +1 onset, -1 release
    for key in range(NUM_KEYS):
        onsets = np.nonzero(change[:, key] == 1)[0]
        releases = np.nonzero(change[:, key] == -1)[0]
        for start, stop in zip(onsets, releases, strict=True):
            piano.notes.append(
                pm_mod.Note(velocity=80, pitch=key + LOWEST, start=start * frame, end=stop * frame)
            )
    pm.instruments.append(piano)
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    pm.write(str(tmp))
    os.replace(tmp, path)


def plot_roll(roll: np.ndarray, path: Path, title: str = "") -> None:
    """The piano roll as a PNG: time across, keys up (A0 at the bottom, C notes labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roll = np.asarray(roll, dtype=bool)
    fig, ax = plt.subplots(figsize=(min(16, 4 + len(roll) / 25), 5))
    ax.imshow(roll.T, origin="lower", aspect="auto", cmap="Greys", interpolation="nearest")
    c_keys = [k for k in range(NUM_KEYS) if (k + LOWEST) % 12 == 0]
    ax.set_yticks(c_keys, [f"C{(k + LOWEST) // 12 - 1}" for k in c_keys])
    ax.set_xlabel("frame")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
