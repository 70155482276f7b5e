"""``espeak-synth``: a speech corpus anyone can regenerate offline, for the CTC recognisers.

TIMIT cannot be shipped, so this corpus is made on the user's machine by Debian's ``espeak-ng``
(a formant synthesiser) from Penn Treebank sentences:

- **sentences**: PTB training lines of ``min_words`` to ``max_words`` words, every word
  alphabetic (no ``<unk>``, ``N``, numbers or abbreviations), drawn without replacement by the
  seed;
- **speakers**: an accent (one of espeak-ng's English voices) with a voice variant (its
  ``+m1`` ... ``+f5`` formant sets) and a speaker's own pitch (``-p``) and speed (``-s``, words
  per minute), drawn once per speaker; each utterance jitters them slightly;
- **transcription**: the phonemes espeak-ng itself speaks (``-x --sep=" "``, the same voice),
  stress and syllable marks removed; the accent sets the phonemes (en-us's flapped ``t#``,
  Scotland's ``IR``), so a recogniser must hear which was said;
- **noise**: white Gaussian noise at a signal-to-noise ratio drawn per utterance in
  [``snr_low``, ``snr_high``] dB, then rounding to 16 bits;
- **splits**: speaker-disjoint; every accent and every variant occurs in training, while the
  valid and test speakers (accent, variant) pairs are never heard in training.

Every random draw comes from a NumPy generator seeded by ``seed``, each utterance's from its own
(seed, index) stream, so the corpus is a function of the spec and of espeak-ng's version (which
the manifest records). ``content_sha256`` hashes the audio, phones, texts, speakers and splits
in a fixed order: two machines with the same espeak-ng build produce the same checksum, which
``load`` verifies.

The corpus is written to ``<data dir>/espeak-synth/`` (``$RNNLAB_DATA``, else
``~/.cache/rnnlab/data``) as ``corpus.npz`` (plain arrays, read with ``allow_pickle=False``) and
``manifest.json`` (the spec, the versions, the checksum). Made by ``rnnlab data make-speech``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.data.speech import Utterance
from rnnlab.errors import DataError

NAME = "espeak-synth"
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd")  # fmt: skip
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
SPLITS = ("train", "valid", "test")
STRESS_MARKS = "',%="  # espeak-ng's stress and syllabic marks, prefixed to a phoneme
NOT_PHONES = {";", "_", "_:", "_!", "|", "||"}  # pauses and modifiers espeak-ng may print
WORD = re.compile(r"^[a-z]+(?:'[a-z]+)?$")


@dataclass(frozen=True)
class SynthSpec:
    """What the corpus is made from (the manifest records it). ``held_out`` speakers go to each
    of valid and test; the other accent x variant pairs speak the training sentences."""

    utterances: int = 2400
    seed: int = 0
    min_words: int = 4
    max_words: int = 12
    held_out: int = 12
    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    pitch: tuple[int, int] = (25, 75)  # espeak-ng -p, per speaker
    speed: tuple[int, int] = (140, 200)  # espeak-ng -s, words per minute, per speaker
    jitter: int = 5  # per utterance, +- on both
    snr_low: float = 10.0
    snr_high: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Speaker:
    name: str  # "en-us+m3"
    accent: str
    variant: str
    pitch: int
    speed: int
    split: str


def espeak_version() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(
            "espeak-ng is not installed: it synthesises this corpus (Debian/Ubuntu: "
            "apt-get install espeak-ng; macOS: brew install espeak-ng)"
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().split(" Data at:")[0]


def speakers(spec: SynthSpec) -> list[Speaker]:
    """Every accent x variant pair, its pitch and speed drawn once, ``held_out`` pairs to valid
    and as many to test, chosen so that every accent and variant keeps training speakers."""
    rng = np.random.default_rng([spec.seed, 1])
    pairs = [(a, v) for a in spec.accents for v in spec.variants]
    if 2 * spec.held_out >= len(pairs):
        raise DataError(f"held_out {spec.held_out} leaves no training speakers of {len(pairs)}")
    order = rng.permutation(len(pairs))
    split: dict[tuple[str, str], str] = {}
    for name in ("test", "valid"):
        taken = 0
        for i in order:
            if taken == spec.held_out:
                break
            pair = pairs[i]
            if pair in split:
                continue
            trained = [p for p in pairs if p not in split and p != pair]
            if any(p[0] == pair[0] for p in trained) and any(p[1] == pair[1] for p in trained):
                split[pair] = name
                taken += 1
    out = []
    for accent, variant in pairs:
        pitch = int(rng.integers(spec.pitch[0], spec.pitch[1] + 1))
        speed = int(rng.integers(spec.speed[0], spec.speed[1] + 1))
        out.append(Speaker(f"{accent}+{variant}", accent, variant, pitch, speed,
                           split.get((accent, variant), "train")))  # fmt: skip
    return out


def sentences(lines: Sequence[str], spec: SynthSpec) -> list[str]:
    """``spec.utterances`` distinct PTB lines of allowed words, drawn by the seed."""
    pool = sorted({" ".join(w) for line in lines if (w := line.split())
                   and spec.min_words <= len(w) <= spec.max_words
                   and all(WORD.match(x) for x in w)})  # fmt: skip
    if len(pool) < spec.utterances:
        raise DataError(f"only {len(pool)} usable sentences for {spec.utterances} utterances")
    rng = np.random.default_rng([spec.seed, 2])
    return [pool[i] for i in rng.choice(len(pool), spec.utterances, replace=False)]


def phonemes(text: str, accent: str) -> tuple[str, ...]:
    """The phonemes espeak-ng speaks for ``text`` in ``accent``, stress marks removed."""
    out = subprocess.run(["espeak-ng", "-q", "-x", "--sep= ", "-v", accent, text],
                         capture_output=True, text=True, check=True)  # fmt: skip
    phones = []
    for token in out.stdout.split():
        token = token.lstrip(STRESS_MARKS)
        if token and token not in NOT_PHONES:
            phones.append(token)
    return tuple(phones)


def synthesise(text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    """espeak-ng's 16-bit mono audio of ``text`` and its rate (the RIFF header it streams to
    stdout has no valid size: everything after the ``data`` tag is taken)."""
    out = subprocess.run(["espeak-ng", "--stdout", "-v", voice, "-p", str(pitch), "-s",
                          str(speed), text], capture_output=True, check=True).stdout  # fmt: skip
    if out[:4] != b"RIFF" or out[8:12] != b"WAVE":
        raise DataError(f"espeak-ng gave no WAV audio for voice {voice}")
    rate = int.from_bytes(out[24:28], "little")
    at = out.find(b"data", 12)
    samples = np.frombuffer(out[at + 8 : len(out) - (len(out) - at - 8) % 2], dtype="<i2")
    return samples.copy(), rate


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """int16 samples with white Gaussian noise at ``snr_db`` (power ratio over the whole clip),
    rounded and clipped back to int16."""
    x = samples.astype(np.float64)
    power = float(np.mean(x**2)) if len(x) else 0.0
    noisy = x + rng.standard_normal(len(x)) * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(np.rint(noisy), -32768, 32767).astype(np.int16)


def make(spec: SynthSpec, lines: Sequence[str], directory: Path,
         progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Synthesise the corpus into ``directory`` (see ``save``); returns the manifest."""
    version = espeak_version()
    people = speakers(spec)
    by_split = {s: [p for p in people if p.split == s] for s in SPLITS}
    texts = sentences(lines, spec)
    audio, phones, meta = [], [], []
    for i, text in enumerate(texts):
        rng = np.random.default_rng([spec.seed, 3, i])
        split = SPLITS[int(rng.choice(3, p=_split_share(by_split)))]
        who = by_split[split][int(rng.integers(len(by_split[split])))]
        pitch = int(np.clip(who.pitch + rng.integers(-spec.jitter, spec.jitter + 1), 0, 99))
        speed = max(80, who.speed + int(rng.integers(-spec.jitter, spec.jitter + 1)))
        samples, rate = synthesise(text, who.name, pitch, speed)
        audio.append(add_noise(samples, float(rng.uniform(spec.snr_low, spec.snr_high)), rng))
        phones.append(phonemes(text, who.accent))
        meta.append((who.name, split, rate, text))
        if progress is not None:
            progress(i + 1, len(texts))
    arrays = pack(audio, phones, meta)
    info = {"spec": _jsonable(asdict(spec)), "espeak_ng": version,
            "speakers": [asdict(p) for p in people]}  # fmt: skip
    return save(arrays, info, directory)


def save(arrays: dict[str, np.ndarray], info: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Write a packed corpus and its manifest (``info`` plus the checksum, the split sizes and
    the phones) to ``directory``: written to a temporary directory beside it and renamed, so an
    interrupted run leaves nothing half-made. Returns the manifest."""
    manifest = {"name": NAME, **info, "content_sha256": content_sha256(arrays),
                "utterances": {s: int(np.sum(arrays["split"] == s)) for s in SPLITS},
                "phones": [str(p) for p in arrays["inventory"]]}  # fmt: skip
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        np.savez(tmp / "corpus.npz", **arrays)  # type: ignore[arg-type]
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def _split_share(by_split: dict[str, list[Speaker]]) -> list[float]:
    counts = np.array([len(by_split[s]) for s in SPLITS], dtype=np.float64)
    return list(counts / counts.sum())


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def pack(audio: list[np.ndarray], phones: list[tuple[str, ...]],
         meta: list[tuple[str, str, int, str]]) -> dict[str, np.ndarray]:  # fmt: skip
    """The corpus as flat arrays: audio and phone indices concatenated with offsets."""
    inventory = sorted({p for seq in phones for p in seq})
    index = {p: i for i, p in enumerate(inventory)}
    return {
        "audio": np.concatenate(audio).astype(np.int16),
        "audio_offsets": np.cumsum([0, *(len(a) for a in audio)]).astype(np.int64),
        "phones": np.array([index[p] for seq in phones for p in seq], dtype=np.int32),
        "phone_offsets": np.cumsum([0, *(len(s) for s in phones)]).astype(np.int64),
        "inventory": np.array(inventory, dtype=np.str_),
        "speaker": np.array([m[0] for m in meta], dtype=np.str_),
        "split": np.array([m[1] for m in meta], dtype=np.str_),
        "rate": np.array([m[2] for m in meta], dtype=np.int32),
        "text": np.array([m[3] for m in meta], dtype=np.str_),
    }


ARRAYS = ("audio", "audio_offsets", "phones", "phone_offsets", "inventory", "speaker", "split",
          "rate", "text")  # fmt: skip


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in ``ARRAYS`` order (the zip
    container's own timestamps are left out, so the checksum is the content's)."""
    h = hashlib.sha256()
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any]:
    """A corpus's manifest.json, refused in one line where it is missing or malformed."""
    path = directory / "manifest.json"
    if not path.is_file():
        raise DataError(f"no {NAME} corpus in {directory}: make it with `rnnlab data make-speech`")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); make the corpus again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("phones"), list):
        raise DataError(f"{path}: no list of phones; make the corpus again")
    return manifest


def load(directory: Path) -> tuple[dict[str, list[Utterance]], dict[str, Any]]:
    """The corpus's utterances by split, and its manifest, after checking the checksum."""
    npz_path, manifest_path = directory / "corpus.npz", directory / "manifest.json"
    if not npz_path.is_file() or not manifest_path.is_file():
        raise DataError(f"no {NAME} corpus in {directory}: make it with `rnnlab data make-speech`")
    manifest = read_manifest(directory)
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            missing = [a for a in ARRAYS if a not in npz.files]
            if missing:
                raise DataError(f"{npz_path}: arrays {missing} missing; make it again")
            arrays = {a: npz[a] for a in ARRAYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{npz_path}: not a readable corpus of plain arrays ({exc}); make it "
                        "again with `rnnlab data make-speech`") from None  # fmt: skip
    if content_sha256(arrays) != manifest.get("content_sha256"):
        raise DataError(
            f"{npz_path}: its content does not match the checksum in its manifest "
            "(changed or truncated); make it again with `rnnlab data make-speech`"
        )
    inventory = [str(p) for p in arrays["inventory"]]
    ao, po = arrays["audio_offsets"], arrays["phone_offsets"]
    out: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    for i in range(len(arrays["speaker"])):
        utt = Utterance(
            name=f"{i:05d}", speaker=str(arrays["speaker"][i]),
            audio=arrays["audio"][ao[i] : ao[i + 1]].astype(np.float32) / 32768.0,
            rate=int(arrays["rate"][i]),
            phones=tuple(inventory[j] for j in arrays["phones"][po[i] : po[i + 1]]),
            text=str(arrays["text"][i]),
        )  # fmt: skip
        out[str(arrays["split"][i])].append(utt)
    return out, manifest
