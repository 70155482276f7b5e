"""The bundled sets (checksums, splits), the user file formats, and their errors."""

import hashlib
import json
import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from rnnlab.data import load_polyphonic, make_batches, to_tensors
from rnnlab.data.polyphonic import BUNDLED, PianoRolls, load_npz, save_npz
from rnnlab.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLITS = {
    "jsb": (229, 76, 77),
    "nottingham": (694, 173, 170),
    "musedata": (524, 135, 124),
    "piano-midi": (87, 12, 25),
}


def _manifest():
    return json.loads(resources.files("rnnlab.data.bundled").joinpath("manifest.json").read_text())


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_sets_have_the_standard_splits(name):
    rolls = load_polyphonic(name)
    assert tuple(len(rolls.splits[s]) for s in ("train", "valid", "test")) == SPLITS[name]
    piece = rolls.splits["train"][0]
    assert piece.dtype == bool and piece.shape[1] == 88


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundle_checksums(name):
    entry = _manifest()[name]
    blob = resources.files("rnnlab.data.bundled").joinpath(entry["file"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == entry["sha256"]


@pytest.mark.skipif(
    not SHARED.is_dir(), reason="the shared benchmark data is not beside this checkout"
)
def test_bundle_was_converted_from_the_shared_files():
    """Source checksums agree with shared/data/SHA256SUMS; the rolls are frame-for-frame equal."""
    sums = dict(reversed(line.split()) for line in (SHARED / "SHA256SUMS").read_text().splitlines())
    for entry in _manifest().values():
        assert sums[f"polyphonic/{entry['source_file']}"] == entry["source_sha256"]
    original = load_polyphonic(SHARED / "polyphonic" / "JSB_Chorales.mat")
    bundled = load_polyphonic("jsb")
    for split in ("train", "valid", "test"):
        for a, b in zip(original.splits[split], bundled.splits[split], strict=True):
            assert np.array_equal(a, b)


def test_damaged_bundle_is_refused(monkeypatch):
    import rnnlab.data.polyphonic as poly

    manifest = _manifest()
    manifest["jsb"]["sha256"] = "0" * 64
    monkeypatch.setattr(poly, "_manifest", lambda: manifest)
    with pytest.raises(DataError, match="jsb.npz fails its checksum"):
        load_polyphonic("jsb")


def _rolls():
    rng = np.random.default_rng(0)
    splits = {s: [rng.random((n, 88)) < 0.1 for n in (5, 9, 3)] for s in ("train", "valid", "test")}
    return PianoRolls("x", "test", splits)


def _same(a, b):
    for split in ("train", "valid", "test"):
        assert len(a.splits[split]) == len(b.splits[split])
        for p, q in zip(a.splits[split], b.splits[split], strict=True):
            assert np.array_equal(p, q)


def test_mat_round_trip(tmp_path):
    rolls = _rolls()
    cells = {}
    for split, pieces in rolls.splits.items():
        arr = np.empty((1, len(pieces)), dtype=object)
        for i, p in enumerate(pieces):
            arr[0, i] = p.astype(np.uint8)
        cells[f"{split}data"] = arr
    scipy.io.savemat(tmp_path / "mine.mat", cells)
    _same(load_polyphonic(tmp_path / "mine.mat"), rolls)


def test_pickle_of_note_lists(tmp_path):
    """Boulanger-Lewandowski's format: lists of active MIDI notes per frame."""
    rolls = _rolls()
    data = {
        s: [[tuple(int(k) + 21 for k in np.flatnonzero(f)) for f in p] for p in pieces]
        for s, pieces in rolls.splits.items()
    }
    path = tmp_path / "mine.pickle"
    path.write_bytes(pickle.dumps(data, protocol=2))
    _same(load_polyphonic(path), rolls)


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"train": [np.zeros(3)]}))  # references numpy: a global
    with pytest.raises(DataError, match="refusing to load"):
        load_polyphonic(path)


def test_pickle_note_out_of_range(tmp_path):
    path = tmp_path / "bad.pickle"
    path.write_bytes(pickle.dumps({"train": [[[200]]], "valid": [[[60]]], "test": [[[60]]]}))
    with pytest.raises(DataError, match="MIDI note 200"):
        load_polyphonic(path)


def test_npz_packed_and_unpacked(tmp_path):
    rolls = _rolls()
    save_npz(rolls, tmp_path / "packed.npz")
    _same(load_npz(tmp_path / "packed.npz"), rolls)
    arrays = {}
    for s, pieces in rolls.splits.items():
        arrays[f"{s}_rolls"] = np.concatenate(pieces).astype(np.uint8)
        arrays[f"{s}_lengths"] = np.array([len(p) for p in pieces])
    np.savez(tmp_path / "plain.npz", **arrays)
    _same(load_npz(tmp_path / "plain.npz"), rolls)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "not a readable .npz"),
        (b"garbage bytes", "not a plain array file"),
    ],
)
def test_corrupt_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"broken.npz: {message}"):
        load_polyphonic(path)


def test_bad_contents_are_named(tmp_path):
    np.savez(
        tmp_path / "wide.npz",
        train_rolls=np.zeros((4, 90)),
        train_lengths=np.array([4]),
        valid_rolls=np.zeros((1, 90)),
        valid_lengths=np.array([1]),
        test_rolls=np.zeros((1, 90)),
        test_lengths=np.array([1]),
    )
    with pytest.raises(DataError, match=r"wide.npz: train piece 0 has shape \(4, 90\)"):
        load_polyphonic(tmp_path / "wide.npz")
    np.savez(
        tmp_path / "empty.npz",
        train_rolls=np.zeros((0, 88)),
        train_lengths=np.array([], int),
        valid_rolls=np.zeros((1, 88)),
        valid_lengths=np.array([1]),
        test_rolls=np.zeros((1, 88)),
        test_lengths=np.array([1]),
    )
    with pytest.raises(DataError, match="empty.npz: the train split is empty"):
        load_polyphonic(tmp_path / "empty.npz")
    (tmp_path / "bad.mat").write_bytes(b"MATLAB but not really")
    with pytest.raises(DataError, match="bad.mat: not a readable .mat"):
        load_polyphonic(tmp_path / "bad.mat")
    with pytest.raises(DataError, match="does not exist"):
        load_polyphonic(tmp_path / "missing.mat")


def test_unknown_dataset_name_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'nottingham'"):
        load_polyphonic("notingham")


def test_windows_carry_the_previous_frame():
    from rnnlab.data import split_windows

    seq = torch.arange(7.0).view(7, 1)
    windows, previous = split_windows([seq], 3)
    assert [w.flatten().tolist() for w in windows] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [p.item() for p in previous] == [0.0, 2.0, 5.0]


def test_window_inputs_match_the_whole_piece():
    """A window's first prediction uses the true previous frame as its input."""
    from rnnlab.models import ModelConfig, RNNPredictor

    model = RNNPredictor(ModelConfig(cell="tanh", hidden_size=4, num_layers=1)).double().eval()
    x = (torch.rand(1, 6, 88, dtype=torch.float64) < 0.2).double()
    # A tanh cell with zero recurrent weights makes each step depend on its input alone.
    with torch.no_grad():
        model.rnn.cells[0].weight_hh.zero_()
    whole = model(x, torch.tensor([6])).log_prob
    part = model(x[:, 3:], torch.tensor([3]), first_input=x[:, 2]).log_prob
    torch.testing.assert_close(part, whole[:, 3:])


def test_batches_cover_every_sequence_once():
    seqs = to_tensors([np.ones((n, 88), dtype=bool) * (n % 2) for n in range(1, 30)])
    g = torch.Generator().manual_seed(0)
    batches = make_batches(seqs, 4, shuffle=True, generator=g)
    assert sorted(int(n) for b in batches for n in b.lengths) == list(range(1, 30))
    for b in batches:
        for row, n in zip(b.x, b.lengths, strict=True):
            assert torch.all(row[n:] == 0)
    again = make_batches(seqs, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert [b.lengths.tolist() for b in again] == [b.lengths.tolist() for b in batches]
