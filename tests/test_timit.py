"""TIMIT's reader on a tiny fake copy written here (the corpus is licensed): the layout in either
case, SPHERE audio in both byte orders and RIFF, the splits' speakers, the phone tables, and the
one-line errors for copies that are not TIMIT, partial or malformed."""

import io
import shutil
import wave

import numpy as np
import pytest

from rnnlab.data.timit import (
    CORE_TEST_SPEAKERS,
    DEV_SPEAKERS,
    FOLD_39,
    PHONES_61,
    fold_39,
    looks_like_timit,
    phone_inventory,
    read_audio,
    read_timit,
)
from rnnlab.errors import ConfigError, DataError

PHONES = ("h#", "sh", "iy", "hv", "ae", "dcl", "d", "q", "y", "axr", "pau", "h#")
TEXT = "She had your dark suit in greasy wash water all year."
EXTRA_SPEAKER = "DR3/MXYZ0"  # in TEST/ but in neither list: belongs to no split


def sphere(samples, order="01", **fields):
    """A NIST SPHERE file: the 1024-byte ASCII header, then the samples in ``order``."""
    header = {"database_id": ("-s5", "TIMIT"), "sample_count": ("-i", len(samples)),
              "sample_rate": ("-i", 16000), "channel_count": ("-i", 1),
              "sample_n_bytes": ("-i", 2), "sample_byte_format": (f"-s{len(order)}", order),
              "sample_coding": ("-s3", "pcm"), "sample_sig_bits": ("-i", 16)}  # fmt: skip
    header.update(fields)
    text = "NIST_1A\n   1024\n" + "".join(f"{k} {t} {v}\n" for k, (t, v) in header.items())
    dtype = ">i2" if order == "10" else "<i2"
    return (text + "end_head\n").ljust(1024).encode() + np.asarray(samples, dtype).tobytes()


def riff(samples, width=2, channels=1):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(16000)
        w.writeframes(np.asarray(samples, f"<i{width}").tobytes())
    return buffer.getvalue()


def phn(phones=PHONES):
    return "".join(f"{10 * i} {10 * i + 10} {p}\n" for i, p in enumerate(phones))


def _write_utterance(speaker_dir, stem, audio, lower, text=None):
    def name(ext):
        return f"{stem}.{ext}".lower() if lower else f"{stem}.{ext}"

    speaker_dir.mkdir(parents=True, exist_ok=True)
    (speaker_dir / name("WAV")).write_bytes(audio)
    (speaker_dir / name("PHN")).write_text(phn())
    if text is not None:
        (speaker_dir / name("TXT")).write_text(f"0 {10 * len(PHONES)} {text}\n")


def make_timit(root, lower=False):
    """A fake TIMIT copy at ``root``; returns {utterance name: int16 samples} of every utterance
    the splits should read (SA and the extra speaker's are written but not returned)."""
    rng = np.random.default_rng(0)
    expected = {}

    def utterance(split, speaker, stem, kind="01", text=None):
        samples = rng.integers(-32768, 32768, size=int(rng.integers(1, 40))).astype(np.int16)
        audio = riff(samples) if kind == "riff" else sphere(samples, order=kind)
        path = root / (split.lower() if lower else split)
        for part in speaker.split("/"):
            path = path / (part.lower() if lower else part)
        _write_utterance(path, stem, audio, lower, text)
        if not stem.startswith("SA"):
            expected[f"{speaker}/{stem}"] = samples

    for speaker in ("DR1/FCJF0", "DR2/MKLS0"):
        utterance("TRAIN", speaker, "SA1")
    utterance("TRAIN", "DR1/FCJF0", "SX127", "01", text=TEXT)
    utterance("TRAIN", "DR1/FCJF0", "SI648", "10")
    utterance("TRAIN", "DR2/MKLS0", "SX6", "riff")
    for i, speaker in enumerate(CORE_TEST_SPEAKERS):
        utterance("TEST", speaker, "SA2")
        utterance("TEST", speaker, f"SX{100 + i}")
    for i, speaker in enumerate(DEV_SPEAKERS):  # their regions are not in the list: any will do
        utterance("TEST", f"DR{1 + i % 8}/{speaker}", f"SI{1000 + i}", "10" if i % 2 else "01")
    utterance("TEST", EXTRA_SPEAKER, "SX1")
    extra = {name for name in expected if name.startswith(EXTRA_SPEAKER)}
    return {k: v for k, v in expected.items() if k not in extra}


@pytest.fixture
def timit(tmp_path):
    root = tmp_path / "timit"
    return root, make_timit(root)


# --- reading ---------------------------------------------------------------------------------
@pytest.mark.parametrize("lower", [False, True], ids=["upper-case", "lower-case"])
def test_each_split_reads_its_speakers_without_sa(tmp_path, lower):
    expected = make_timit(tmp_path, lower=lower)
    splits = {split: read_timit(tmp_path, split) for split in ("train", "valid", "test")}
    assert [u.name for u in splits["train"]] == [
        "DR1/FCJF0/SI648", "DR1/FCJF0/SX127", "DR2/MKLS0/SX6"]  # fmt: skip
    assert {u.speaker for u in splits["valid"]} == set(DEV_SPEAKERS)
    assert {f"{u.name.split('/')[0]}/{u.speaker}" for u in splits["test"]} == set(
        CORE_TEST_SPEAKERS
    )
    names = [u.name for utts in splits.values() for u in utts]
    assert sorted(names) == sorted(expected)  # SA and the extra speaker are in no split
    assert not any("/SA" in n or "MXYZ0" in n for n in names)
    for utts in splits.values():
        assert [u.name for u in utts] == sorted(u.name for u in utts)
    assert looks_like_timit(tmp_path)


def test_audio_samples_round_trip_exactly(timit):
    root, expected = timit
    utts = [u for split in ("train", "valid", "test") for u in read_timit(root, split)]
    kinds = {"DR1/FCJF0/SX127": "little-endian", "DR1/FCJF0/SI648": "big-endian",
             "DR2/MKLS0/SX6": "riff"}  # fmt: skip
    assert {u.name for u in utts} >= set(kinds)
    for u in utts:
        assert u.audio.dtype == np.float32 and u.rate == 16000
        np.testing.assert_array_equal(u.audio * 32768.0, expected[u.name].astype(np.float32))
        assert np.all(np.abs(u.audio) <= 1.0)


@pytest.mark.parametrize(
    "make, samples",
    [
        (lambda s: sphere(s, "01"), [0, 1, -1, 32767, -32768]),
        (lambda s: sphere(s, "10"), [0, 1, -1, 32767, -32768]),
        (riff, [0, 1, -1, 32767, -32768]),
    ],
    ids=["sphere-01", "sphere-10", "riff"],
)
def test_read_audio_scales_int16_by_32768(tmp_path, make, samples):
    path = tmp_path / "X.WAV"
    path.write_bytes(make(np.array(samples, np.int16)))
    audio, rate = read_audio(path)
    assert rate == 16000
    np.testing.assert_array_equal(audio, np.array(samples, np.float32) / 32768.0)


def test_phones_and_text_are_read(timit):
    root, _ = timit
    first, second = read_timit(root, "train")[:2]
    assert first.name == "DR1/FCJF0/SI648" and first.text == ""  # no .TXT written
    assert second.name == "DR1/FCJF0/SX127" and second.speaker == "FCJF0"
    assert second.phones == PHONES and second.text == TEXT


# --- phones ----------------------------------------------------------------------------------
def test_the_61_phones_fold_into_39_classes():
    classes = phone_inventory(fold=True)
    assert len(PHONES_61) == 61 == len(set(PHONES_61)) and set(FOLD_39) == set(PHONES_61)
    assert phone_inventory(fold=False) == PHONES_61
    assert len(classes) == 39 and list(classes) == sorted(classes)
    assert all(FOLD_39[p] in classes or (p == "q" and FOLD_39[p] is None) for p in PHONES_61)
    assert set(classes) <= set(PHONES_61) | {"sil"}  # the classes are phones, bar silence


@pytest.mark.parametrize(
    "phones, folded",
    [
        (("aa", "ao"), ("aa", "aa")),
        (("ah", "ax", "ax-h"), ("ah", "ah", "ah")),
        (("er", "axr", "hh", "hv", "ih", "ix"), ("er", "er", "hh", "hh", "ih", "ih")),
        (("l", "el", "m", "em", "n", "en", "nx"), ("l", "l", "m", "m", "n", "n", "n")),
        (("ng", "eng", "sh", "zh", "uw", "ux"), ("ng", "ng", "sh", "sh", "uw", "uw")),
        (("pcl", "tcl", "kcl", "bcl", "dcl", "gcl", "h#", "pau", "epi"), ("sil",) * 9),
        (("bcl", "b"), ("sil", "b")),  # each segment stays one symbol: repeats are kept
        (("h#", "q", "iy", "q", "h#"), ("sil", "iy", "sil")),  # q deleted
        (("dx", "jh", "ch", "zh"), ("dx", "jh", "ch", "sh")),
    ],
)
def test_fold_39(phones, folded):
    assert fold_39(phones) == folded


def test_fold_39_refuses_a_phone_outside_timit():
    with pytest.raises(DataError, match="'sil' is not a TIMIT phone"):
        fold_39(["h#", "sil"])


# --- speaker lists ---------------------------------------------------------------------------
def test_the_speaker_lists():
    core = [s.split("/")[1] for s in CORE_TEST_SPEAKERS]
    assert len(core) == len(set(core)) == 24
    assert len(DEV_SPEAKERS) == len(set(DEV_SPEAKERS)) == 50
    assert not set(core) & set(DEV_SPEAKERS)
    for region in range(1, 9):  # two male speakers and one female per dialect region
        sexes = sorted(s[4] for s in CORE_TEST_SPEAKERS if s.startswith(f"DR{region}/"))
        assert sexes == ["F", "M", "M"], region
    assert all(s[0] in "FM" and s == s.upper() for s in DEV_SPEAKERS)


# --- errors ----------------------------------------------------------------------------------
def _write(relative, content):
    def change(root):
        path = root / relative
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return change


def _remove(relative):
    def change(root):
        path = root / relative
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return change


SX127 = "TRAIN/DR1/FCJF0/SX127"
BAD_COPIES = {
    "bad-phn-line": (_write(f"{SX127}.PHN", "0 10 h#\n10 b\n"), "train",
                     ["SX127.PHN line 2", "start_sample end_sample phone", "'10 b'"]),
    "bad-phn-numbers": (_write(f"{SX127}.PHN", "0 10 h#\n20 10 b\n"), "train",
                        ["SX127.PHN line 2", "start <= end"]),
    "unknown-phone": (_write(f"{SX127}.PHN", "0 10 h#\n10 20 zz\n"), "train",
                      ["SX127.PHN line 2", "'zz' is not a TIMIT phone"]),
    "empty-phn": (_write(f"{SX127}.PHN", ""), "train", ["SX127.PHN", "no phones"]),
    "missing-wav": (_remove(f"{SX127}.WAV"), "train", ["SX127.PHN", "no SX127.WAV beside it"]),
    "shorten": (_write(f"{SX127}.WAV", sphere([1, 2], sample_coding=(
        "-s26", "pcm,embedded-shorten-v1.09"))), "train",
        ["SX127.WAV", "16-bit mono PCM", "sample_coding 'pcm,embedded-shorten-v1.09'"]),
    "stereo": (_write(f"{SX127}.WAV", sphere([1, 2], channel_count=("-i", 2))), "train",
               ["SX127.WAV", "channel_count 2"]),
    "8-bit": (_write(f"{SX127}.WAV", sphere([1, 2], sample_n_bytes=("-i", 1))), "train",
              ["SX127.WAV", "sample_n_bytes 1"]),
    "truncated": (_write(f"{SX127}.WAV", sphere([1, 2], sample_count=("-i", 900))), "train",
                  ["SX127.WAV", "sample_count 900", "holds 2 samples"]),
    "bad-header-line": (_write(f"{SX127}.WAV", sphere([1], sample_rate=("-x", 1))), "train",
                        ["SX127.WAV", "bad NIST SPHERE header line 'sample_rate -x 1'"]),
    "riff-stereo": (_write(f"{SX127}.WAV", riff([1, 2, 3, 4], channels=2)), "train",
                    ["SX127.WAV", "16-bit mono WAV", "2 channels"]),
    "not-audio": (_write(f"{SX127}.WAV", b"hello"), "train",
                  ["SX127.WAV", "neither a NIST SPHERE file"]),
    "core-speaker-missing": (_remove("TEST/DR4/FJLM0"), "test",
                             ["core test set: found 23 of its 24 speakers", "missing: FJLM0"]),
    "dev-speaker-missing": (_remove("TEST/DR1/FADG0"), "valid",
                            ["development set: found 49 of its 50 speakers", "FADG0"]),
    "no-test-dir": (_remove("TEST"), "test",
                    ["no TEST/DR*/<speaker>/*.PHN files under", "TIMIT's TRAIN and TEST"]),
}  # fmt: skip


@pytest.mark.parametrize("change, split, fragments", BAD_COPIES.values(), ids=list(BAD_COPIES))
def test_a_bad_copy_is_refused_in_one_line(timit, change, split, fragments):
    root, _ = timit
    change(root)
    with pytest.raises(DataError) as info:
        read_timit(root, split)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("layout", ["empty", "only-train", "no-phn", "a-file"])
def test_a_root_that_is_not_timit(tmp_path, layout):
    root = tmp_path / "data"
    root.mkdir()
    if layout == "only-train":
        _write_utterance(root / "TRAIN" / "DR1" / "FCJF0", "SX127", sphere([1]), lower=False)
    if layout == "no-phn":
        (root / "TRAIN" / "DR1" / "FCJF0").mkdir(parents=True)
        (root / "TEST").mkdir()
    if layout == "a-file":
        root = tmp_path / "timit.tar"
        root.write_bytes(b"")
    assert not looks_like_timit(root)
    split = "test" if layout == "only-train" else "train"
    with pytest.raises(DataError, match=r"no (TRAIN|TEST)/DR\*/<speaker>/\*\.PHN files under"):
        read_timit(root, split)


def test_an_unknown_split_is_refused(timit):
    with pytest.raises(ConfigError, match="unknown TIMIT split 'dev'"):
        read_timit(timit[0], "dev")
