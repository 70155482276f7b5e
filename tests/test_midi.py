"""MIDI in and out: round trips, key estimation and transposition, bad files, the CLI."""

import numpy as np
import pytest

from rnnlab.cli import main
from rnnlab.data.midi import MAJOR, MINOR, estimate_key, import_midi_dir, read_midi, write_midi
from rnnlab.errors import DataError


def _roll(frames=48, offset=0, seed=0):
    """A small piece: a C-major scale in the middle voice over a held chord-ish bass."""
    rng = np.random.default_rng(seed)
    roll = np.zeros((frames, 88), dtype=bool)
    scale = [0, 2, 4, 5, 7, 9, 11, 12]
    for t in range(frames):
        roll[t, 39 + offset + scale[(t // 2) % 8]] = True  # C4 = column 39
        roll[t, 27 + offset + (0 if (t // 8) % 2 == 0 else 7)] = True
        if rng.random() < 0.2:
            roll[t, 51 + offset + 4] = True
    return roll


def test_a_roll_survives_midi_and_back(tmp_path):
    roll = _roll()
    write_midi(roll, tmp_path / "a.mid", frames_per_beat=2, bpm=100)
    back = read_midi(tmp_path / "a.mid", frames_per_beat=2)
    np.testing.assert_array_equal(back, roll)
    # A different quantisation reads the same notes on a finer grid.
    fine = read_midi(tmp_path / "a.mid", frames_per_beat=4)
    np.testing.assert_array_equal(fine[::2], roll)


def test_key_estimation_finds_the_profiles_own_keys():
    for tonic in range(12):
        assert estimate_key(np.roll(MAJOR, tonic)) == (tonic, "major")
        assert estimate_key(np.roll(MINOR, tonic)) == (tonic, "minor")


def test_transposition_moves_a_piece_to_c(tmp_path):
    write_midi(_roll(offset=2), tmp_path / "d.mid")  # the piece in D major
    np.testing.assert_array_equal(read_midi(tmp_path / "d.mid", transpose=True), _roll())
    np.testing.assert_array_equal(read_midi(tmp_path / "d.mid"), _roll(offset=2))


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path):
    for i in range(4):
        write_midi(_roll(seed=i), tmp_path / f"p{i}.mid")
    (tmp_path / "broken.mid").write_bytes(b"MThd garbage")
    (tmp_path / "empty.midi").write_bytes(b"")
    write_midi(np.zeros((5, 88), bool), tmp_path / "silent.mid")
    rolls, skipped = import_midi_dir(tmp_path, "mine")
    assert sum(len(v) for v in rolls.splits.values()) == 4
    assert len(skipped) == 3
    for name in ("broken.mid", "empty.midi", "silent.mid"):
        assert any(name in line for line in skipped), name
    with pytest.raises(DataError, match="is not a directory"):
        import_midi_dir(tmp_path / "p0.mid", "x")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="holds no .mid or .midi files"):
        import_midi_dir(tmp_path / "none", "x")


def test_import_and_train_and_sample_from_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "data"))
    midis = tmp_path / "midis"
    midis.mkdir()
    for i in range(6):
        write_midi(_roll(frames=24, seed=i), midis / f"p{i}.mid")
    (midis / "bad.mid").write_bytes(b"nope")
    assert main(["data", "import-midi", str(midis), "--name", "mine", "--transpose"]) == 0
    captured = capsys.readouterr()
    assert "bad.mid" in captured.err and "train 4, valid 1, test 1" in captured.out
    run = tmp_path / "run"
    argv = ["train", "--data", "mine", "--cell", "gru", "--hidden-size", "8", "--epochs", "2",
            "--batch-size", "2", "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    piece, png = tmp_path / "piece.mid", tmp_path / "roll.png"
    argv = ["sample", str(run), "--out", str(piece), "--png", str(png), "--frames", "30"]
    assert main(argv) == 0
    assert read_midi(piece).shape[1] == 88 and png.stat().st_size > 2000
    assert main(["sample", str(run)]) == 2
    assert "needs --out" in capsys.readouterr().err
