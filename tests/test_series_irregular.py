"""The series family on irregular steps: time columns, subsampling, the gaps a model is given,
forecasts at known time stamps, and the bad inputs of each."""

import json

import numpy as np
import pytest
import torch

from rnnlab.cli import main
from rnnlab.data.series import read_series, seasonal_naive, subsample
from rnnlab.errors import ConfigError, DataError
from rnnlab.families.series import (
    GapPredictor,
    row_gaps,
    sample_paths,
    seasonal_naive_in_time,
)
from rnnlab.models.rnn import ModelConfig


def _irregular_csv(path, n=160, seed=0, ids=False):
    """A noisy sine sampled at random times (gaps 0.5 to 3), with a time column."""
    rng = np.random.default_rng(seed)
    rows = ["id,time,value,other" if ids else "time,value,other"]
    for key in ("a", "b") if ids else ("",):
        t = np.cumsum(rng.uniform(0.5, 3.0, n))
        for ti, v in zip(t, np.sin(t / 4) + 0.05 * rng.standard_normal(n), strict=True):
            rows.append(f"{key + ',' if ids else ''}{ti:.4f},{v:.4f},{0.01 * ti:.4f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_time_column_gives_time_stamps_and_is_no_value_column(tmp_path):
    series = read_series(_irregular_csv(tmp_path / "s.csv", ids=True), id_column="id",
                         time_column="time")  # fmt: skip
    assert series.columns == ["value", "other"] and len(series.sequences) == 2
    assert series.times is not None and all(np.all(np.diff(t) > 0) for t in series.times)
    assert series.sequences[0].shape == (160, 2)
    assert read_series(tmp_path / "s.csv", id_column="id").times is None


@pytest.mark.parametrize(
    "text,kwargs,fragment",
    [
        ("t,x\n0,1\n2,2\n1,3\n", {"time_column": "t"}, "must increase strictly"),
        ("t,x\n0,1\n0,2\n", {"time_column": "t"}, "must increase strictly"),
        ("t,x\n0,1\n1,2\n", {"time_column": "tt"}, "no time column 'tt'"),
        ("t,x\n0,1\n1,2\n", {"time_column": "t", "columns": ["t", "x"]}, "is the time column"),
        ("t,x\n0,1\n1,2\n", {"time_column": "t", "id_column": "t"}, "both the id and the time"),
        ("t,x\n0,1\nnow,2\n", {"time_column": "t"}, "is not a number"),
        ("t\n0\n1\n", {"time_column": "t"}, "no value columns"),
    ],
)
def test_bad_time_columns_are_refused(tmp_path, text, kwargs, fragment):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=fragment):
        read_series(path, **kwargs)


def test_arrays_have_no_time_column(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(10.0))
    with pytest.raises(DataError, match="applies to .csv files only"):
        read_series(tmp_path / "a.npy", time_column="t")


def test_subsampling_keeps_a_seeded_share_in_time_order(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(100.0))
    series = read_series(tmp_path / "a.npy")
    kept = subsample(series, 0.3, seed=4)
    assert kept.times is not None and len(kept.times[0]) == 30
    np.testing.assert_array_equal(kept.sequences[0][:, 0], kept.times[0])  # values = indices
    assert np.all(np.diff(kept.times[0]) > 0)
    np.testing.assert_array_equal(subsample(series, 0.3, seed=4).times[0], kept.times[0])
    assert not np.array_equal(subsample(series, 0.3, seed=5).times[0], kept.times[0])
    again = subsample(kept, 0.5, seed=0)  # a subsample keeps the time stamps it had
    assert set(again.times[0]) <= set(kept.times[0])
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        subsample(series, 0.0, seed=0)


def test_row_gaps_follow_the_transform():
    times = np.array([0.0, 1.0, 3.0, 3.5])
    np.testing.assert_array_equal(row_gaps(times, "difference"), [1.0, 2.0, 0.5])
    gaps = row_gaps(times, "level")
    assert np.isnan(gaps[0]) and np.array_equal(gaps[1:], [1.0, 2.0, 0.5])


def test_the_seasonal_naive_in_time_is_the_seasonal_naive_on_regular_steps():
    history = np.random.default_rng(0).standard_normal((30, 2))
    times = np.arange(30.0)
    for season in (1, 7, 12):
        want = seasonal_naive(history, 9, season)
        got = seasonal_naive_in_time(times, history, np.arange(30.0, 39.0), float(season))
        np.testing.assert_array_equal(got, want)
    last = seasonal_naive_in_time(times, history, np.array([31.5, 40.0]), 0.0)
    np.testing.assert_array_equal(last, history[[-1, -1]])
    # irregular: the last observation at or before tau - k season
    t = np.array([0.0, 0.7, 2.0, 2.6, 4.1])
    got = seasonal_naive_in_time(t, t[:, None], np.array([4.5, 6.0]), 2.0)
    np.testing.assert_array_equal(got[:, 0], [2.0, 2.6])  # at 2.5 and 4.0
    with pytest.raises(DataError, match="shorter than the season"):
        seasonal_naive_in_time(t, t[:, None], np.array([5.0]), 10.0)


@pytest.mark.parametrize("cell,width", [("cru", 1), ("gru", 2)])
def test_a_cell_without_gaps_gets_them_as_an_input_feature(cell, width):
    config = ModelConfig(cell=cell, hidden_size=4, output="gaussian", frame_size=1)
    model = GapPredictor(config)
    assert model.rnn.input_size == width
    x = torch.randn(2, 6, 1)
    lengths = torch.tensor([6, 4])
    a = model(x, lengths, gaps=torch.ones(2, 6))
    b = model(x, lengths, gaps=torch.full((2, 6), 3.0))
    assert a.num_frames == 10 and (a.log_prob - b.log_prob).abs().max() > 1e-6
    with pytest.raises(ConfigError, match="gaps"):
        model(x, lengths)


def test_sampled_paths_read_the_gaps_of_the_horizon():
    torch.manual_seed(0)
    model = GapPredictor(ModelConfig(cell="cru", hidden_size=4, output="gaussian", frame_size=1))
    history = torch.randn(12, 1)
    gaps = torch.rand(15) + 0.5
    first = sample_paths(model, [history], 3, 50, torch.Generator().manual_seed(1), [gaps])
    same = sample_paths(model, [history], 3, 50, torch.Generator().manual_seed(1), [gaps])
    torch.testing.assert_close(first, same)
    later = gaps.clone()
    later[14:] = 5.0  # row 14 (the third forecast step) comes later
    other = sample_paths(model, [history], 3, 50, torch.Generator().manual_seed(1), [later])
    torch.testing.assert_close(other[:, :, :2], first[:, :, :2])  # the first two as before
    assert (other[:, :, 2] - first[:, :, 2]).abs().max() > 1e-6


@pytest.mark.parametrize("cell", ["cru", "gru"])
@pytest.mark.parametrize("source", ["time-column", "subsample"])
def test_the_family_trains_and_forecasts_on_irregular_steps(tmp_path, cell, source):
    if source == "time-column":
        data = ["--data", str(_irregular_csv(tmp_path / "s.csv")), "--time-column", "time"]
    else:
        rng = np.random.default_rng(2)
        t = np.arange(400)
        np.save(tmp_path / "a.npy", np.sin(2 * np.pi * t / 20) + 0.1 * rng.standard_normal(400))
        data = ["--data", str(tmp_path / "a.npy"), "--subsample-keep", "0.5",
                "--subsample-seed", "1"]  # fmt: skip
    run = tmp_path / "run"
    argv = ["train", *data, "--cell", cell, "--hidden-size", "4", "--epochs", "1",
            "--forecast-samples", "5", "--horizon", "4", "--out", str(run),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((run / "result.json").read_text())
    assets = json.loads((run / "assets.json").read_text())
    assert result["irregular"] and result["horizon"] == 4 and assets["gap_scale"] > 0
    assert np.isfinite(result["test_nll"]) and result["test_crps"] > 0
    if source == "subsample":
        assert result["season"] == pytest.approx(20.0, rel=0.15)  # in time units (steps)
        assert assets["data"]["num_steps"] == 200
    out = tmp_path / "f.csv"
    assert main(["sample", str(run), "--out", str(out), "--frames", "3"]) == 0
    assert len(out.read_text().splitlines()) == 1 + 3 * (2 if source == "time-column" else 1)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--subsample-keep", "0"], "subsample"),
        (["--subsample-keep", "1.5"], "subsample"),
        (["--subsample-seed", "3"], "--subsample-keep below 1"),
        (["--time-column", "time"], "applies to .csv files only"),
    ],
)
def test_irregular_options_the_run_cannot_honour_are_refused(tmp_path, capsys, extra, message):
    np.save(tmp_path / "a.npy", np.sin(np.arange(200.0)))
    argv = ["train", "--data", str(tmp_path / "a.npy"), *extra, "--epochs", "1",
            "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    assert message in capsys.readouterr().err
