"""The CTC recognisers: features, edit distance, the loss and the decoders against enumeration
of every alignment, padding, the synthetic corpus (regenerated bit for bit), the family."""

import itertools
import json
import math
import random
import shutil
import wave

import numpy as np
import pytest
import torch
from family_fixtures import tone_corpus

from rnnlab.cli import main
from rnnlab.data import synth_speech
from rnnlab.data.speech import (
    FeatureConfig,
    edit_distance,
    error_rate,
    frame_count,
    hz_to_mel,
    log_mel,
    mel_filterbank,
)
from rnnlab.errors import DataError
from rnnlab.models.ctc import CTCRecognizer, beam_decode, greedy_decode, stack_frames
from rnnlab.models.rnn import ModelConfig


# --- features --------------------------------------------------------------------------------
def test_the_mel_filters_are_triangles_peaking_at_their_mel_spaced_centres():
    rate, n_fft = 16000, 512
    filters = mel_filterbank(40, n_fft, rate)
    assert filters.shape == (40, 257) and filters.min() >= 0 and filters.max() <= 1
    bins = np.arange(257) * rate / n_fft
    centres = bins[filters.argmax(1)]
    assert np.all(np.diff(centres) >= 0)  # in order
    spacing = np.diff(hz_to_mel(centres[10:]))  # equal on the mel scale, to a bin's width
    assert spacing.std() < 0.2 * spacing.mean()
    for row in filters:  # one rise, one fall
        nz = np.flatnonzero(row)
        assert np.all(np.diff(row[nz[0] : row.argmax() + 1]) >= 0)
        assert np.all(np.diff(row[row.argmax() : nz[-1] + 1]) <= 0)


@pytest.mark.parametrize("tone_hz", [300.0, 1000.0, 3000.0])
def test_a_tone_lights_the_filter_around_its_frequency(tone_hz):
    rate = 16000
    t = np.arange(rate // 2) / rate
    feats = log_mel(np.sin(2 * np.pi * tone_hz * t), rate, FeatureConfig(log_energy=False))
    filters = mel_filterbank(40, 512, rate)
    expected = int(np.argmax(filters[:, round(tone_hz * 512 / rate)]))
    assert abs(int(np.median(feats.argmax(1))) - expected) <= 1


def test_log_mel_equals_a_frame_by_frame_computation():
    rng = np.random.default_rng(0)
    rate, cfg = 8000, FeatureConfig(n_mels=20)
    x = rng.standard_normal(2345) * 0.1
    feats = log_mel(x, rate, cfg)
    win, hop = 200, 80
    assert feats.shape == (frame_count(len(x), rate, cfg), 21) == (1 + (2345 - win) // hop, 21)
    filters = mel_filterbank(20, 256, rate)
    for t in (0, 7, len(feats) - 1):
        frame = x[t * hop : t * hop + win]
        spectrum = np.abs(np.fft.rfft(frame * np.hanning(win), 256)) ** 2
        want = np.log(filters @ spectrum + 1e-6)
        np.testing.assert_allclose(feats[t, :20], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(feats[t, 20], np.log(np.sum(frame**2) + 1e-6), rtol=1e-5)
    assert log_mel(x[:100], rate, cfg).shape == (0, 21)  # shorter than one window


# --- scoring ---------------------------------------------------------------------------------
def _levenshtein(a, b):
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i, j in itertools.product(range(1, len(a) + 1), range(1, len(b) + 1)):
        d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_edit_distance_against_the_textbook_table():
    r = random.Random(0)
    for _ in range(500):
        a = [r.randrange(4) for _ in range(r.randrange(0, 10))]
        b = [r.randrange(4) for _ in range(r.randrange(0, 10))]
        assert edit_distance(a, b) == _levenshtein(a, b)
    assert error_rate([["a", "b"], []], [["a", "c"], ["d", "e"]]) == 0.75
    with pytest.raises(ValueError, match="no symbols"):
        error_rate([[]], [[]])


# --- the loss and the decoders ---------------------------------------------------------------
def _collapse(path):
    out, prev = [], None
    for k in path:
        if k != prev and k != 0:
            out.append(k)
        prev = k
    return tuple(out)


def _labellings(log_probs):
    """p(z) of every labelling z, by enumerating every alignment (float64)."""
    T, C = log_probs.shape
    probs: dict[tuple, float] = {}
    for path in itertools.product(range(C), repeat=T):
        z = _collapse(path)
        probs[z] = probs.get(z, 0.0) + math.exp(sum(float(log_probs[t, k])
                                                    for t, k in enumerate(path)))  # fmt: skip
    return probs


def _model(cell="gru", stride=1, bidirectional=True, phones=2):
    torch.manual_seed(0)
    cfg = ModelConfig(model="ctc", cell=cell, hidden_size=5, dropout=0.0,
                      bidirectional=bidirectional)  # fmt: skip
    return CTCRecognizer(cfg, input_size=3, num_phones=phones, stride=stride).double()


def test_the_ctc_loss_is_minus_log_the_sum_over_alignments():
    model = _model()
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 4, 3])
    targets = torch.tensor([[1, 2, 1], [2, 2, 0], [1, 0, 0]])
    target_lengths = torch.tensor([3, 2, 1])
    log_probs, steps = model(x, lengths)
    loss = model.ctc_loss(log_probs, steps, targets, target_lengths)
    want = 0.0
    for b in range(3):
        probs = _labellings(log_probs[b, : steps[b]].detach())
        want -= math.log(probs[tuple(targets[b, : target_lengths[b]].tolist())])
    assert float(loss.detach()) == pytest.approx(want, rel=1e-10)


def test_too_few_steps_for_the_labels_is_refused():
    model = _model(stride=2)
    log_probs, steps = model(torch.randn(1, 4, 3, dtype=torch.float64), torch.tensor([4]))
    with pytest.raises(ValueError, match="2 steps for 2 phones needing 3: use a smaller"):
        model.ctc_loss(log_probs, steps, torch.tensor([[1, 1]]), torch.tensor([2]))


@pytest.mark.parametrize("seed", range(20))
def test_beam_search_finds_the_most_probable_labelling(seed):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(2 * torch.randn(1, 5, 3, generator=g), -1)
    probs = _labellings(log_probs[0])
    best = max(probs, key=probs.get)
    found = beam_decode(log_probs, torch.tensor([5]), beam=64, prune=-1e9)[0]
    assert probs[tuple(found)] == pytest.approx(probs[best], rel=1e-9)
    path = log_probs[0].argmax(-1).tolist()
    assert greedy_decode(log_probs, torch.tensor([5]))[0] == list(_collapse(path))


def test_stacking_frames_and_padding_leave_each_utterance_its_own():
    x = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1)
    stacked, steps = stack_frames(x, torch.tensor([5, 3]), 2)
    assert stacked.shape == (2, 3, 2) and steps.tolist() == [3, 2]
    assert stacked[0, 2].tolist() == [4.0, 0.0]
    model = _model(stride=2)
    model.set_normalisation(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([2.0, 1.0, 0.5]))
    long = torch.randn(1, 9, 3, dtype=torch.float64)
    short = torch.randn(1, 4, 3, dtype=torch.float64)
    batch = torch.cat([long, torch.nn.functional.pad(short, (0, 0, 0, 5))])
    together, _ = model(batch, torch.tensor([9, 4]))
    alone, steps = model(short, torch.tensor([4]))
    torch.testing.assert_close(together[1, : int(steps[0])], alone[0])


# --- the synthetic corpus --------------------------------------------------------------------
def test_a_packed_corpus_loads_and_a_changed_one_is_refused(tmp_path):
    manifest = tone_corpus(tmp_path / "c")
    splits, loaded = synth_speech.load(tmp_path / "c")
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "valid": 4, "test": 4}
    assert loaded["content_sha256"] == manifest["content_sha256"]
    assert loaded["phones"] == ["a", "b", "c", "d"]
    assert all(1 < len(u.phones) < 6 and u.rate == 8000 for u in splits["train"])
    with np.load(tmp_path / "c" / "corpus.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["audio"][100] += 1
    np.savez(tmp_path / "c" / "corpus.npz", **arrays)
    with pytest.raises(DataError, match="does not match the checksum"):
        synth_speech.load(tmp_path / "c")
    with pytest.raises(DataError, match="make-speech"):
        synth_speech.load(tmp_path / "nothing")


def test_speakers_are_split_disjointly_with_every_accent_and_variant_trained():
    people = synth_speech.speakers(synth_speech.SynthSpec())
    by = {s: [p for p in people if p.split == s] for s in synth_speech.SPLITS}
    assert len(by["valid"]) == len(by["test"]) == 12 and len(people) == 96
    trained = by["train"]
    assert {p.accent for p in trained} == set(synth_speech.ACCENTS)
    assert {p.variant for p in trained} == set(synth_speech.VARIANTS)


ESPEAK = shutil.which("espeak-ng") is not None


@pytest.mark.skipif(not ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_the_synthetic_corpus_regenerates_bit_for_bit(tmp_path):
    lines = [
        "the cat sat on the mat today",
        "a dog ran in the park again",
        "the market fell sharply on friday",
        "investors sold their shares quickly",
        "the company said it expects more",
        "prices rose in the last quarter",
    ] * 3
    lines = [f"{line} {w}" for line, w in zip(lines, "abcdefghijklmnopqr", strict=False)]
    spec = synth_speech.SynthSpec(utterances=8, min_words=4, max_words=12)
    first = synth_speech.make(spec, lines, tmp_path / "one")
    second = synth_speech.make(spec, lines, tmp_path / "two")
    assert first["content_sha256"] == second["content_sha256"]
    splits, _ = synth_speech.load(tmp_path / "two")
    utt = next(u for s in splits.values() for u in s)
    assert utt.rate == 22050 and len(utt.audio) > utt.rate // 2 and len(utt.phones) > 5
    assert not any(p[0] in synth_speech.STRESS_MARKS for p in utt.phones)
    other = synth_speech.make(synth_speech.SynthSpec(utterances=8, seed=1), lines,
                              tmp_path / "three")  # fmt: skip
    assert other["content_sha256"] != first["content_sha256"]


@pytest.mark.skipif(not ESPEAK, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_espeak_phonemes_carry_no_stress_marks():
    assert synth_speech.phonemes("the yellow house", "en-us")[:2] == ("D", "@2")


# --- the family ------------------------------------------------------------------------------
def test_a_recogniser_learns_the_tones_well_below_the_baselines(tmp_path, capsys):
    tone_corpus(tmp_path / "tones", per_split=(40, 8, 8))
    out = tmp_path / "run"
    argv = ["--data", str(tmp_path / "tones"), "--hidden-size", "16", "--num-layers", "1",
            "--lr", "0.01", "--epochs", "25", "--batch-size", "8", "--dropout", "0"]  # fmt: skip
    code = main(["train", *argv, "--threads", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["test_per"] < 30 < result["baseline_frequent_phone_per"]
    assert result["test_per_beam"] < 30
    assert main(["eval", str(out), "--split", "test"]) == 0
    assert f"{result['test_per']:.4f}" in capsys.readouterr().out
    # decode: a split beside its references, and a WAV file of known tones
    assert main(["decode", str(out), "--n", "2", "--beam", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("  ref: ") and lines[2].startswith("  hyp: ")
    assert lines[-1] == f"test: PER {result['test_per']:.2f}% over 8 utterances (greedy)"
    rate, t = 8000, np.arange(800) / 8000
    tones = np.concatenate([np.sin(2 * np.pi * f * t) for f in (300.0, 2500.0, 700.0)])
    tones = tones + np.random.default_rng(1).standard_normal(len(tones)) / 30  # as trained on
    wav = tmp_path / "tones.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((0.3 * tones * 32767).astype("<i2").tobytes())
    assert main(["decode", str(out), str(wav)]) == 0
    assert capsys.readouterr().out.strip() == f"{wav}: a d b"
    assert main(["decode", str(out), str(tmp_path / "none.wav")]) == 2


def test_a_missing_corpus_and_a_stray_option_are_one_line(tmp_path, capsys):
    assert main(["train", "--model", "ctc", "--data", str(tmp_path / "none"), "--out",
                 str(tmp_path / "r")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "espeak-synth" in err and len(err.strip().splitlines()) == 1
    tone_corpus(tmp_path / "tones")
    assert main(["train", "--data", str(tmp_path / "tones"), "--phones", "39", "--out",
                 str(tmp_path / "r2")]) == 2  # fmt: skip
    assert "--phones applies to TIMIT only" in capsys.readouterr().err


def test_unidirectional_reads_forward_only(tmp_path):
    from rnnlab.families import FAMILIES, make_config

    tone_corpus(tmp_path / "tones")
    family = FAMILIES["ctc"]
    both = family.build_model(make_config({"data": str(tmp_path / "tones")}), {})
    one = family.build_model(make_config({"data": str(tmp_path / "tones"),
                                          "unidirectional": True}), {})  # fmt: skip
    assert both.rnn.config.bidirectional and not one.rnn.config.bidirectional
    assert one.out.in_features * 2 == both.out.in_features


def test_a_stride_too_coarse_for_the_labels_is_refused_before_training(tmp_path, capsys):
    tone_corpus(tmp_path / "tones")
    out = tmp_path / "r"
    argv = ["train", "--data", str(tmp_path / "tones"), "--stride", "16", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "steps at --stride 16" in err
    best = int(err.split("use --stride ")[1].split()[0])
    assert 1 < best < 16 and not out.exists()
    assert main(["train", "--data", str(tmp_path / "tones"), "--stride", str(best), "--epochs",
                 "1", "--hidden-size", "4", "--out", str(out), "--no-progress"]) == 0  # fmt: skip


@pytest.mark.parametrize(
    "manifest,npz,message",
    [
        ("{", None, "manifest.json: not valid JSON"),
        ('{"phones": 3}', None, "no list of phones"),
        (None, b"garbage", "not a readable corpus of plain arrays"),
    ],
)
def test_a_corrupt_corpus_is_one_line_naming_the_file(tmp_path, capsys, manifest, npz, message):
    tone_corpus(tmp_path / "c")
    if manifest is not None:
        (tmp_path / "c" / "manifest.json").write_text(manifest)
    if npz is not None:
        (tmp_path / "c" / "corpus.npz").write_bytes(npz)
    out = tmp_path / "r"
    assert main(["train", "--data", str(tmp_path / "c"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not out.exists()
