"""TIMIT read from its own layout: the user's licensed copy, never shipped with rnnlab.

Layout (LDC93S1; upper- or lower-case directory and file names are both accepted)::

    ROOT/TRAIN/DR1/FCJF0/SX127.WAV   audio: NIST SPHERE (or RIFF WAV in converted copies)
                         SX127.PHN   "start_sample end_sample phone" per segment, 61 phones
                         SX127.TXT   "start_sample end_sample sentence" (optional here)
    ROOT/TEST/DR1/MDAB0/...

A speaker directory is the sex (M/F), three initials and a digit; the dialect regions are
DR1..DR8. Utterances are SA (two dialect sentences read by every speaker: left out of every
split by convention, since they would leak between training and testing), SX and SI.

Splits (speaker-disjoint, SA excluded):

* ``"train"``: every speaker under TRAIN/ (462 speakers, 3696 utterances in a full copy);
* ``"test"``: the core test set, 24 speakers from TEST/, two male and one female per dialect
  region (192 utterances): ``CORE_TEST_SPEAKERS``;
* ``"valid"``: the 50-speaker development set from TEST/ used by Graves et al. 2013 and
  Kaldi's recipe (400 utterances), disjoint from the core test set: ``DEV_SPEAKERS``.

Sources the tables were checked against (read in the stored public index, not copied):

* ``FOLD_39``: kaldi-asr/kaldi ``egs/timit/s5/conf/phones.60-48-39.map`` (its third column;
  ``q`` has no class there and is deleted) and speechbrain/speechbrain
  ``recipes/TIMIT/timit_prepare.py`` (``from_60_to_39_phn``, ``q`` mapped to ""): both agree
  with Lee & Hon 1989 as used by Graves et al. 2013. ``PHONES_61`` is the map's first column.
* ``DEV_SPEAKERS``: kaldi-asr/kaldi ``egs/timit/s5/conf/dev_spk.list`` and the ``dev_spk``
  list of speechbrain/speechbrain ``recipes/TIMIT/timit_prepare.py`` (the same 50 ids). Neither
  gives the speakers' dialect regions, so they are stored as bare ids (TIMIT's speaker ids are
  unique across the corpus, and a speaker is matched by id alone).
* ``CORE_TEST_SPEAKERS``: the 24 ids of the ``test_spk`` list in speechbrain/speechbrain
  ``recipes/TIMIT/timit_prepare.py`` (Kaldi's ``conf/test_spk.list`` is not in the index). Their
  dialect regions and the male, male, female order per region are from other stored public
  files without a named repository (one says it is "edited from TIMIT/README.DOC"); they agree
  with each other.

Phones: the reader returns TIMIT's 61-phone sequence; ``fold_39`` maps it to the 39 classes of
Lee & Hon (1989) for training and scoring. Folding deletes ``q`` (the glottal stop) and keeps
every other segment as one symbol, so consecutive equal classes are NOT merged (closure and
burst ``bcl b`` become ``sil b``): CTC targets keep the segments as labelled. (Scoring with
merged repeats is a different convention; merge both sides before ``error_rate`` for it.)

>>> fold_39(("h#", "bcl", "b", "ix", "q", "ao", "h#"))
('sil', 'sil', 'b', 'ih', 'aa', 'sil')
>>> len(phone_inventory(fold=False)), len(phone_inventory(fold=True))
(61, 39)
"""

from __future__ import annotations

import re
import wave
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from rnnlab.data.speech import Utterance
from rnnlab.errors import DataError, unknown_name

SPLITS = ("train", "valid", "test")

# --- phones ----------------------------------------------------------------------------------
# Lee & Hon 1989, Table 3; checked against Kaldi's phones.60-48-39.map (see the module docstring)
FOLD_39: dict[str, str | None] = {
    "aa": "aa", "ae": "ae", "ah": "ah", "ao": "aa", "aw": "aw", "ax": "ah", "ax-h": "ah",
    "axr": "er", "ay": "ay", "b": "b", "bcl": "sil", "ch": "ch", "d": "d", "dcl": "sil",
    "dh": "dh", "dx": "dx", "eh": "eh", "el": "l", "em": "m", "en": "n", "eng": "ng",
    "epi": "sil", "er": "er", "ey": "ey", "f": "f", "g": "g", "gcl": "sil", "h#": "sil",
    "hh": "hh", "hv": "hh", "ih": "ih", "ix": "ih", "iy": "iy", "jh": "jh", "k": "k",
    "kcl": "sil", "l": "l", "m": "m", "n": "n", "ng": "ng", "nx": "n", "ow": "ow", "oy": "oy",
    "p": "p", "pau": "sil", "pcl": "sil", "q": None, "r": "r", "s": "s", "sh": "sh", "t": "t",
    "tcl": "sil", "th": "th", "uh": "uh", "uw": "uw", "ux": "uw", "v": "v", "w": "w", "y": "y",
    "z": "z", "zh": "sh",
}  # fmt: skip
"""Each of the 61 TIMIT phones to its 39-phone class; ``None``: deleted (``q`` only)."""

PHONES_61: tuple[str, ...] = tuple(sorted(FOLD_39))
"""TIMIT's 61 phones as they appear in .PHN files (sorted)."""


def phone_inventory(fold: bool) -> tuple[str, ...]:
    """The 61 TIMIT phones, or (``fold``) the 39 classes, sorted."""
    if not fold:
        return PHONES_61
    return tuple(sorted({c for c in FOLD_39.values() if c is not None}))


def fold_39(phones: Iterable[str]) -> tuple[str, ...]:
    """61 phones to the 39 classes, one symbol per segment (repeats kept), ``q`` deleted.

    >>> fold_39(["pau", "tcl", "t", "axr"])
    ('sil', 'sil', 't', 'er')
    """
    folded = []
    for p in phones:
        if p not in FOLD_39:
            raise DataError(f"{p!r} is not a TIMIT phone (the 61 are: {' '.join(PHONES_61)})")
        c = FOLD_39[p]
        if c is not None:
            folded.append(c)
    return tuple(folded)


# --- speakers --------------------------------------------------------------------------------
CORE_TEST_SPEAKERS: tuple[str, ...] = (
    "DR1/MDAB0", "DR1/MWBT0", "DR1/FELC0",
    "DR2/MTAS1", "DR2/MWEW0", "DR2/FPAS0",
    "DR3/MJMP0", "DR3/MLNT0", "DR3/FPKT0",
    "DR4/MLLL0", "DR4/MTLS0", "DR4/FJLM0",
    "DR5/MBPM0", "DR5/MKLT0", "DR5/FNLP0",
    "DR6/MCMJ0", "DR6/MJDH0", "DR6/FMGD0",
    "DR7/MGRT0", "DR7/MNJM0", "DR7/FDHC0",
    "DR8/MJLN0", "DR8/MPAM0", "DR8/FMLD0",
)  # fmt: skip
"""The core test set: per dialect region two male speakers and one female, from TEST/."""

DEV_SPEAKERS: tuple[str, ...] = (
    "FADG0", "FAKS0", "FCAL1", "FCMH0", "FDAC1", "FDMS0", "FDRW0", "FEDW0", "FGJD0", "FJEM0",
    "FJMG0", "FJSJ0", "FKMS0", "FMAH0", "FMML0", "FNMR0", "FREW0", "FSEM0", "MAJC0", "MBDG0",
    "MBNS0", "MBWM0", "MCSH0", "MDLF0", "MDLS0", "MDVC0", "MERS0", "MGJF0", "MGLB0", "MGWT0",
    "MJAR0", "MJFC0", "MJSW0", "MMDB1", "MMDM2", "MMJR0", "MMWH0", "MPDF0", "MRCS0", "MREB0",
    "MRJM4", "MRJR0", "MROA0", "MRTK0", "MRWS1", "MTAA0", "MTDT0", "MTEB0", "MTHC0", "MWJG0",
)  # fmt: skip
"""The 50-speaker development set (Kaldi's conf/dev_spk.list, upper-cased), from TEST/."""

# which TIMIT directory each split reads, and which of its speakers (None: all)
_SPLIT_SOURCE: dict[str, tuple[str, tuple[str, ...] | None, str]] = {
    "train": ("train", None, "training set"),
    "valid": ("test", DEV_SPEAKERS, "development set"),
    "test": ("test", tuple(s.split("/")[1] for s in CORE_TEST_SPEAKERS), "core test set"),
}

_REGION = re.compile(r"dr[1-8]", re.IGNORECASE)
_SPEAKER = re.compile(r"[mf][a-z]{3}[0-9]", re.IGNORECASE)
_PHN = re.compile(r"(s[aix][0-9]+)\.phn", re.IGNORECASE)


# --- layout ----------------------------------------------------------------------------------
def _child(parent: Path, name: str) -> Path | None:
    """``parent``'s directory called ``name`` in any case (TRAIN, train), or None."""
    exact = [parent / name.upper(), parent / name.lower()]
    for path in exact:
        if path.is_dir():
            return path
    return next((p for p in sorted(parent.iterdir()) if p.name.lower() == name and p.is_dir()),
                None)  # fmt: skip


def _subdirs(parent: Path, pattern: re.Pattern[str]) -> list[Path]:
    return sorted(p for p in parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir())


def _speaker_dirs(split_dir: Path) -> Iterator[Path]:
    for region in _subdirs(split_dir, _REGION):
        yield from _subdirs(region, _SPEAKER)


def _has_phn(speaker_dir: Path) -> bool:
    return any(_PHN.fullmatch(p.name) for p in speaker_dir.iterdir())


def looks_like_timit(path: str | Path) -> bool:
    """Whether ``path`` holds TIMIT's TRAIN/ and TEST/ with a DR*/<speaker>/*.PHN under TRAIN/
    (stops at the first such file: cheap enough to recognise a ``--data`` directory)."""
    root = Path(path)
    if not root.is_dir():
        return False
    train, test = _child(root, "train"), _child(root, "test")
    if train is None or test is None:
        return False
    return any(_has_phn(s) for s in _speaker_dirs(train))


def _not_timit(root: Path, split_dir: str) -> DataError:
    return DataError(f"no {split_dir.upper()}/DR*/<speaker>/*.PHN files under {root}: give the "
                     "directory that holds TIMIT's TRAIN and TEST")  # fmt: skip


# --- files -----------------------------------------------------------------------------------
def read_phn(path: Path) -> tuple[str, ...]:
    """The phones of a .PHN file, one per ``start_sample end_sample phone`` line, checked."""
    phones = []
    text = path.read_text(encoding="ascii", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if (len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit()
                or int(fields[0]) > int(fields[1])):  # fmt: skip
            raise DataError(f"{path} line {number}: expected 'start_sample end_sample phone' "
                            f"(start <= end), got {line.strip()!r}")  # fmt: skip
        phone = fields[2].lower()
        if phone not in FOLD_39:
            raise DataError(f"{path} line {number}: {fields[2]!r} is not a TIMIT phone "
                            f"(the 61 are: {' '.join(PHONES_61)})")  # fmt: skip
        phones.append(phone)
    if not phones:
        raise DataError(f"{path}: no phones (an empty .PHN file)")
    return tuple(phones)


def read_txt(path: Path) -> str:
    """The sentence of a .TXT file without its leading sample numbers."""
    fields = path.read_text(encoding="ascii", errors="replace").split(maxsplit=2)
    if len(fields) == 3 and fields[0].isdigit() and fields[1].isdigit():
        return fields[2].strip()
    return " ".join(fields)


def _sphere_header(path: Path, data: bytes) -> tuple[dict[str, int | float | str], int]:
    """The fields of a NIST SPHERE header (``key -type value`` lines up to ``end_head``) and
    the header's size in bytes."""
    lines = data[:64].split(b"\n", 2)
    size_field = lines[1].strip() if len(lines) > 2 else b""
    if not size_field.isdigit() or not 16 <= int(size_field) <= len(data):
        raise DataError(f"{path}: a NIST SPHERE header whose size line is not a byte count "
                        "within the file")  # fmt: skip
    size = int(size_field)
    fields: dict[str, int | float | str] = {}
    for line in data[:size].decode("ascii", errors="replace").splitlines()[2:]:
        line = line.strip()
        if line == "end_head":
            return fields, size
        if not line or line.startswith(";"):
            continue
        parts = line.split(maxsplit=2)
        try:
            key, kind, value = parts if len(parts) == 3 else (*parts, "")
            if kind == "-i":
                fields[key] = int(value)
            elif kind == "-r":
                fields[key] = float(value)
            elif kind.startswith("-s"):
                fields[key] = value
            else:
                raise ValueError(kind)
        except ValueError:
            raise DataError(f"{path}: bad NIST SPHERE header line {line!r} (expected "
                            "'key -i|-r|-sN value')") from None  # fmt: skip
    raise DataError(f"{path}: the NIST SPHERE header has no end_head within its {size} bytes")


def _read_sphere(path: Path, data: bytes) -> tuple[np.ndarray, int]:
    header, size = _sphere_header(path, data)
    coding = str(header.get("sample_coding", "pcm"))
    channels = header.get("channel_count", 1)
    width = header.get("sample_n_bytes")
    order = header.get("sample_byte_format")
    rate = header.get("sample_rate")
    problem = None
    if not isinstance(rate, int) or rate <= 0:
        problem, rate = f"sample_rate {rate!r}", 0
    elif coding != "pcm":
        problem = f"sample_coding {coding!r} (decompress it first, e.g. with sph2pipe)"
    elif channels != 1:
        problem = f"channel_count {channels}"
    elif width != 2:
        problem = f"sample_n_bytes {width}"
    elif order not in ("01", "10"):
        problem = f"sample_byte_format {order!r} (01: little-endian, 10: big-endian)"
    if problem is not None:
        raise DataError(f"{path}: rnnlab reads only 16-bit mono PCM NIST SPHERE audio, this "
                        f"file has {problem}")  # fmt: skip
    body = data[size:]
    count = header.get("sample_count", len(body) // 2)
    if not isinstance(count, int) or not 0 <= 2 * count <= len(body):
        raise DataError(f"{path}: the header says sample_count {count} but the file holds "
                        f"{len(body) // 2} samples (truncated?)")  # fmt: skip
    dtype = "<i2" if order == "01" else ">i2"
    return np.frombuffer(body, dtype=dtype, count=count), rate


def _read_riff(path: Path) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise DataError(
                    f"{path}: rnnlab reads only 16-bit mono WAV, this file has "
                    f"{w.getnchannels()} channels of {8 * w.getsampwidth()} bits"
                )
            rate, frames = w.getframerate(), w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise DataError(f"{path}: not a readable RIFF WAV file ({exc})") from None
    return np.frombuffer(frames, dtype="<i2"), rate


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """float32 (n,) samples in [-1, 1] (int16 / 32768) and the sample rate of a TIMIT .WAV:
    NIST SPHERE (16-bit mono PCM, either byte order) or RIFF WAV (16-bit mono)."""
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(b"NIST_1A"):
        samples, rate = _read_sphere(path, data)
    elif data.startswith(b"RIFF"):
        samples, rate = _read_riff(path)
    else:
        raise DataError(f"{path}: neither a NIST SPHERE file (NIST_1A) nor a RIFF WAV file")
    return samples.astype(np.float32) / 32768.0, rate


# --- the reader ------------------------------------------------------------------------------
def _read_speaker(region: str, speaker_dir: Path) -> list[Utterance]:
    speaker = speaker_dir.name.upper()
    # upper-cased names; where a copy holds both SX127.PHN and sx127.phn the upper-case one wins
    files = {p.name.upper(): p for p in sorted(speaker_dir.iterdir(), reverse=True)}
    utterances = []
    for upper, phn in sorted(files.items()):
        match = _PHN.fullmatch(upper)
        if match is None or upper.startswith("SA"):
            continue
        stem = match.group(1)
        wav = files.get(f"{stem}.WAV")
        if wav is None:
            raise DataError(f"{phn}: no {stem}.WAV beside it")
        audio, rate = read_audio(wav)
        txt = files.get(f"{stem}.TXT")
        utterances.append(Utterance(name=f"{region}/{speaker}/{stem}", speaker=speaker,
                                    audio=audio, rate=rate, phones=read_phn(phn),
                                    text=read_txt(txt) if txt is not None else ""))  # fmt: skip
    return utterances


def read_timit(root: str | Path, split: str) -> list[Utterance]:
    """The SX and SI utterances of one split (``"train"``, ``"valid"``, ``"test"``; see the
    module docstring) of the TIMIT copy at ``root``, sorted by name (``"DR1/FCJF0/SX127"``),
    with TIMIT's 61-phone sequences (``fold_39`` folds them).

    Raises ``DataError`` when ``root`` does not hold TIMIT, when a file is malformed, and when
    speakers of the split's list are missing from the copy.

    >>> utts = read_timit("/data/timit", "test")  # doctest: +SKIP
    >>> len(utts), utts[0].speaker, utts[0].rate  # doctest: +SKIP
    (192, 'FELC0', 16000)
    """
    if split not in _SPLIT_SOURCE:
        raise unknown_name("TIMIT split", split, SPLITS)
    root = Path(root)
    dir_name, wanted, description = _SPLIT_SOURCE[split]
    split_dir = _child(root, dir_name) if root.is_dir() else None
    if split_dir is None:
        raise _not_timit(root, dir_name)
    speakers = {s.name.upper(): s for s in _speaker_dirs(split_dir) if _has_phn(s)}
    if not speakers:
        raise _not_timit(root, dir_name)
    if wanted is not None:
        missing = [s for s in wanted if s not in speakers]
        if missing:
            raise DataError(f"TIMIT {description}: found {len(wanted) - len(missing)} of its "
                            f"{len(wanted)} speakers under {split_dir} (missing: "
                            f"{', '.join(missing)}): a partial copy?")  # fmt: skip
        speakers = {s: speakers[s] for s in wanted}
    utterances = []
    for speaker_dir in speakers.values():
        utterances += _read_speaker(speaker_dir.parent.name.upper(), speaker_dir)
    return sorted(utterances, key=lambda u: u.name)
