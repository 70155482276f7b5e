"""The real-valued series data layer: reading, splits, normalisation, seasons, baselines, CRPS."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from rnnlab.data.series import (
    Normaliser,
    Series,
    crps_from_samples,
    detect_season,
    mae,
    read_series,
    seasonal_naive,
    time_splits,
)
from rnnlab.errors import ConfigError, DataError


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- CSV ------------------------------------------------------------------------------------------
def test_csv_all_columns(tmp_path):
    path = _write(tmp_path, "two.csv", "a,b\n1,2.5\n3,-4e-1\n\n5, 6 \n")  # a blank line, spaces
    series = read_series(path)
    assert isinstance(series, Series)
    assert (series.name, series.source, series.columns, series.ids) == (
        "two",
        str(path),
        ["a", "b"],
        ["0"],
    )
    assert len(series.sequences) == 1
    seq = series.sequences[0]
    assert seq.dtype == np.float64
    np.testing.assert_array_equal(seq, [[1, 2.5], [3, -0.4], [5, 6]])
    info = series.describe()
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info["num_sequences"], info["dim"], info["length_min"], info["length_max"]) == (
        1,
        2,
        3,
        3,
    )
    json.dumps(info)  # a record for a run directory


def test_csv_column_selection_keeps_the_order_given(tmp_path):
    path = _write(tmp_path, "three.csv", "date,a,b\n2001-01-01,1,2\n2001-01-02,3,4\n")
    series = read_series(path, columns=["b", "a"])
    assert series.columns == ["b", "a"]
    np.testing.assert_array_equal(series.sequences[0], [[2, 1], [4, 3]])


def test_csv_id_column_splits_rows_in_file_order(tmp_path):
    text = "id,x,y\ns2,1,10\ns1,2,20\ns2,3,30\ns1,4,40\ns2,5,50\n"
    series = read_series(_write(tmp_path, "ids.csv", text), id_column="id")
    assert series.ids == ["s2", "s1"]  # order of first appearance
    assert series.columns == ["x", "y"]
    np.testing.assert_array_equal(series.sequences[0], [[1, 10], [3, 30], [5, 50]])
    np.testing.assert_array_equal(series.sequences[1], [[2, 20], [4, 40]])
    info = series.describe()
    assert (info["num_sequences"], info["length_min"], info["length_mean"]) == (2, 2, 2.5)
    selected = read_series(tmp_path / "ids.csv", columns=["y"], id_column="id")
    np.testing.assert_array_equal(selected.sequences[1], [[20], [40]])


@pytest.mark.parametrize(
    ("text", "kwargs", "fragments"),
    [
        ("a,b\n1,2\n3,abc\n", {}, ["bad.csv line 3", "column 'b'", "'abc' is not a number"]),
        ("a,b\n1,2\n3,\n", {}, ["bad.csv line 3", "column 'b'", "''", "empty cell"]),
        ("a,b\n1,2\n3, \n", {}, ["line 3", "column 'b'", "empty cell"]),
        ("a,b\n1,2\ninf,4\n", {}, ["bad.csv line 3", "column 'a'", "'inf' is not a finite"]),
        ("a,b\n1,2\n3,-Infinity\n", {}, ["line 3", "column 'b'", "'-Infinity'"]),
        ("a,b\n1,2\n3,nan\n", {}, ["line 3", "column 'b'", "'nan' is not a finite"]),
        ("a\n1\n\n2\nx\n", {}, ["bad.csv line 5", "column 'a'", "'x'"]),  # physical lines
        ("a,b\n1,2\n3,4,5\n", {}, ["bad.csv line 3 has 3 fields, the header has 2"]),
        ("a,b\n1,2\n3,4\n", {"columns": ["c"]}, ["no column 'c'", "'a', 'b'"]),
        ("a,bb\n1,2\n3,4\n", {"columns": ["b"]}, ["no column 'b'", "Did you mean 'bb'?"]),
        ("a,b\n1,2\n3,4\n", {"id_column": "id"}, ["no id column 'id'", "'a', 'b'"]),
        ("a,b\n1,2\n3,4\n", {"columns": ["a"], "id_column": "a"}, ["'a' is the id column"]),
        ("a,b\n1,2\n3,4\n", {"columns": []}, ["no value columns"]),
        ("id\ns\ns\n", {"id_column": "id"}, ["no value columns"]),
        (
            "date,co2,note\n1958-03-29,316.1,ok\n",
            {},
            ["bad.csv line 2", "column 'date' holds '1958-03-29'", "'note'", "--columns", "'co2'"],
        ),
        ("date\n1958-03-29\n1958-04-05\n", {}, ["'date'", "no column of that line is numeric"]),
        ("a,b\n", {}, ["header but no data rows"]),
        ("a,b\n1,2\n", {}, ["the series has 1 step", "at least 2"]),
        ("id,x\nu,1\nu,2\nv,3\n", {"id_column": "id"}, ["sequence 'v' has 1 step"]),
        ("id,x\nu,1\n,2\n", {"id_column": "id"}, ["line 3", "column 'id'", "id is missing"]),
        ("a,a\n1,2\n3,4\n", {}, ["line 1", "'a' appears twice"]),
        (",a\n1,2\n3,4\n", {}, ["line 1", "header field 1 is empty"]),
        ("", {}, ["bad.csv is empty"]),
        ("\n \n", {}, ["bad.csv is empty"]),
    ],
)
def test_csv_errors_name_line_column_and_value(tmp_path, text, kwargs, fragments):
    with pytest.raises(DataError) as info:
        read_series(_write(tmp_path, "bad.csv", text), **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_series(tmp_path / "missing.csv")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'.*\.csv, \.npy, \.npz"):
        read_series(_write(tmp_path, "series.txt", "a\n1\n2\n"))
    with pytest.raises(DataError, match="is empty"):
        read_series(_write(tmp_path, "empty.npy", ""))
    with pytest.raises(DataError, match="junk.npy: not a plain array file"):
        read_series(_write(tmp_path, "junk.npy", "not numpy"))
    np.save(tmp_path / "a.npy", np.zeros((4, 2)))
    with pytest.raises(DataError, match="apply to .csv files only"):
        read_series(tmp_path / "a.npy", columns=["x0"])


# --- arrays ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("array", "dim"),
    [
        (np.arange(5, dtype=np.float32), 1),
        (np.arange(12).reshape(4, 3), 3),  # integers are real numbers too
        (np.ones((3, 1), dtype=bool), 1),
    ],
)
def test_npy_shapes(tmp_path, array, dim):
    np.save(tmp_path / "s.npy", array)
    series = read_series(tmp_path / "s.npy")
    assert series.columns == [f"x{j}" for j in range(dim)]
    assert series.ids == ["0"]
    (seq,) = series.sequences
    assert seq.dtype == np.float64 and seq.shape == (len(array), dim)
    np.testing.assert_array_equal(seq, array.reshape(len(array), dim))


@pytest.mark.parametrize(
    ("array", "fragments"),
    [
        (np.zeros((3, 2, 2)), ["shape (3, 2, 2)", "expected (T,) or (T, D)"]),
        (np.array(["a", "b", "c"]), ["dtype <U1", "real numbers"]),
        (np.zeros(3, dtype=complex), ["dtype complex128"]),
        (np.array([1.0, np.nan, 3.0]), ["holds nan at step 1, column 0", "(1 are not)"]),
        (np.array([[1.0, 2.0], [3.0, np.inf]]), ["holds inf at step 1, column 1"]),
        (np.zeros((1, 3)), ["has 1 step", "at least 2"]),
        (np.zeros((4, 0)), ["no columns"]),
    ],
)
def test_npy_errors(tmp_path, array, fragments):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError) as info:
        read_series(tmp_path / "bad.npy")
    for fragment in fragments:
        assert fragment in str(info.value)
    assert "bad.npy" in str(info.value)


def test_npy_refuses_pickled_objects(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([1.0, "x", None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: not a readable \.npy file"):
        read_series(tmp_path / "obj.npy")


def test_npz_one_sequence_per_key_sorted(tmp_path):
    arrays = {"b": np.arange(4.0), "a": np.arange(3.0).reshape(3, 1), "c": np.ones(2)}
    np.savez(tmp_path / "many.npz", **arrays)
    series = read_series(tmp_path / "many.npz")
    assert series.ids == ["a", "b", "c"]
    assert series.columns == ["x0"]
    assert [s.shape for s in series.sequences] == [(3, 1), (4, 1), (2, 1)]
    np.testing.assert_array_equal(series.sequences[1][:, 0], arrays["b"])


@pytest.mark.parametrize(
    ("arrays", "fragments"),
    [
        ({"a": np.zeros((3, 2)), "b": np.zeros((3, 3))}, ["different numbers of columns"]),
        ({"a": np.zeros(3), "b": np.array([0.0, np.nan])}, ["array 'b' holds nan at step 1"]),
        ({"a": np.zeros(3), "b": np.zeros(1)}, ["array 'b' has 1 step"]),
        ({"k": np.array(["x", "y"])}, ["array 'k' has dtype <U1"]),
        ({}, ["holds no arrays"]),
    ],
)
def test_npz_errors(tmp_path, arrays, fragments):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        read_series(tmp_path / "bad.npz")
    for fragment in ["bad.npz", *fragments]:
        assert fragment in str(info.value)


def test_npz_refuses_pickled_objects(tmp_path):
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(DataError, match=r"obj\.npz: not a readable \.npz file"):
        read_series(tmp_path / "obj.npz")


# --- splits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("length", "valid", "test", "expected"),
    [
        (100, 0.15, 0.15, {"train": (0, 70), "valid": (70, 85), "test": (85, 100)}),
        (10, 0.15, 0.15, {"train": (0, 6), "valid": (6, 8), "test": (8, 10)}),  # 1.5 -> 2
        (20, 0.1, 0.2, {"train": (0, 14), "valid": (14, 16), "test": (16, 20)}),
        (4, 0.15, 0.15, {"train": (0, 2), "valid": (2, 3), "test": (3, 4)}),
    ],
)
def test_time_splits(length, valid, test, expected):
    assert time_splits(length, valid, test) == expected


@pytest.mark.parametrize(
    ("valid", "test", "needed"), [(0.15, 0.15, 4), (0.1, 0.1, 5), (0.4, 0.4, 5)]
)
def test_time_splits_too_short_says_how_long(valid, test, needed):
    with pytest.raises(DataError, match=f"at least {needed} steps"):
        time_splits(needed - 1, valid, test)
    splits = time_splits(needed, valid, test)  # the length it names is enough
    assert all(stop > start for start, stop in splits.values())


@pytest.mark.parametrize(("valid", "test"), [(0.0, 0.1), (0.1, 1.0), (-0.1, 0.1), (0.5, 0.5)])
def test_time_splits_bad_fractions(valid, test):
    with pytest.raises(ConfigError, match="fraction|below 1"):
        time_splits(100, valid, test)


# --- normalisation --------------------------------------------------------------------------------
def _arrays():
    rng = np.random.default_rng(0)
    return [rng.normal([1.0, -3.0, 7.0], [2.0, 0.5, 1.0], size=(t, 3)) for t in (40, 25)]


def test_normaliser_fit_and_round_trip():
    arrays = _arrays()
    arrays[1][:, 2] = arrays[0][:, 2] = 7.0  # a constant column
    norm_ = Normaliser.fit(arrays)
    rows = np.concatenate(arrays)
    np.testing.assert_allclose(norm_.mean, rows.mean(axis=0))
    np.testing.assert_allclose(norm_.std[:2], rows.std(axis=0)[:2])  # population std
    assert norm_.std[2] == 1.0
    z = norm_.apply(rows)
    np.testing.assert_allclose(z[:, :2].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, :2].std(axis=0), 1.0)
    np.testing.assert_allclose(norm_.invert(z), rows, rtol=1e-12)
    zt = norm_.apply(torch.from_numpy(rows))  # tensors in, tensors out
    assert isinstance(zt, torch.Tensor) and zt.dtype == torch.float64
    np.testing.assert_allclose(zt.numpy(), z)
    np.testing.assert_allclose(norm_.invert(zt).numpy(), rows, rtol=1e-12)
    assert Normaliser.from_dict(json.loads(json.dumps(norm_.to_dict()))) == norm_
    with pytest.raises(DataError, match="fitted to 3 columns, the data has 2"):
        norm_.apply(rows[:, :2])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mean": [0.0], "std": [1.0], "scale": 2}, "unknown key 'scale'"),
        ({"mean": [0.0]}, "'std' is missing"),
        ({"mean": [0.0], "std": [0.0]}, "every std > 0"),
    ],
)
def test_normaliser_from_dict_errors(data, message):
    with pytest.raises(DataError, match=message):
        Normaliser.from_dict(data)


def test_normaliser_log_det_changes_density_units():
    """log N(x; m, s^2) = log N(z; (m - mean) / std, (s / std)^2) - log_det, summed over columns."""
    rows = np.concatenate(_arrays())
    norm_ = Normaliser.fit(_arrays())
    mean, std = np.array(norm_.mean), np.array(norm_.std)
    m, s = np.array([0.5, -2.0, 6.0]), np.array([1.5, 0.7, 2.0])  # any Gaussian over x
    log_px = norm.logpdf(rows, m, s).sum(axis=1)
    log_pz = norm.logpdf(norm_.apply(rows), (m - mean) / std, s / std).sum(axis=1)
    np.testing.assert_allclose(log_px, log_pz - norm_.log_det(), rtol=1e-12)
    assert norm_.log_det() == pytest.approx(np.log(std).sum())


# --- seasons and baselines ------------------------------------------------------------------------
@pytest.mark.parametrize(("period", "seed"), [(12, 0), (12, 1), (7, 2), (24, 3)])
def test_detect_season_noisy_sine_with_trend(period, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(20 * period)
    y = 0.05 * t + 3 * np.sin(2 * np.pi * t / period) + rng.normal(0, 1, len(t))
    assert detect_season(y[:, None]) == period
    assert detect_season(y) == period  # (T,) is one column


def test_detect_season_two_columns():
    rng = np.random.default_rng(4)
    t = np.arange(240)
    wave = np.sin(2 * np.pi * t / 12)
    y = np.stack([10 + 2 * wave, -0.1 * t + wave], axis=1) + rng.normal(0, 0.5, (240, 2))
    assert detect_season(y) == 12


@pytest.mark.parametrize("seed", range(5))
def test_detect_season_white_noise_is_one(seed):
    assert detect_season(np.random.default_rng(seed).normal(size=(500, 2))) == 1


def test_detect_season_degenerate():
    assert detect_season(np.full((50, 1), 3.0)) == 1  # constant
    assert detect_season(np.arange(50.0)) == 1  # a straight line
    assert detect_season(np.array([1.0, 2.0, 1.0])) == 1  # too short for any lag
    assert detect_season(np.sin(2 * np.pi * np.arange(100) / 12), max_lag=10) == 1


def test_seasonal_naive_hand_examples():
    history = np.arange(1.0, 9.0)[:, None]  # y_1 .. y_8 = 1 .. 8
    np.testing.assert_array_equal(seasonal_naive(history, 3, 1)[:, 0], [8, 8, 8])
    np.testing.assert_array_equal(seasonal_naive(history, 6, 4)[:, 0], [5, 6, 7, 8, 5, 6])
    np.testing.assert_array_equal(seasonal_naive(history, 9, 8)[:, 0], [1, 2, 3, 4, 5, 6, 7, 8, 1])
    assert seasonal_naive(history, 0, 4).shape == (0, 1)
    assert seasonal_naive(np.arange(5.0), 2, 2).tolist() == [3.0, 4.0]  # (T,) in, (horizon,) out


@pytest.mark.parametrize(("season", "horizon"), [(1, 5), (3, 7), (5, 5), (5, 11)])
def test_seasonal_naive_matches_its_equation(season, horizon):
    history = np.random.default_rng(season).normal(size=(13, 2))  # y_1 .. y_T
    T = len(history)
    expected = [history[T + h - season * math.ceil(h / season) - 1] for h in range(1, horizon + 1)]
    np.testing.assert_array_equal(seasonal_naive(history, horizon, season), expected)


def test_seasonal_naive_needs_a_full_season():
    with pytest.raises(DataError, match="history of 3 steps is shorter than the season of 4"):
        seasonal_naive(np.zeros((3, 1)), 2, 4)
    with pytest.raises(ValueError, match="season >= 1"):
        seasonal_naive(np.zeros((3, 1)), 2, 0)


# --- metrics --------------------------------------------------------------------------------------
def _crps_pairs(samples, y):
    """The O(N^2) definition: mean |x_i - y| - 1/2 mean_{i,j} |x_i - x_j|."""
    pairs = np.abs(samples[:, None] - samples[None, :]).mean(axis=(0, 1))
    return np.abs(samples - y).mean(axis=0) - 0.5 * pairs


def test_crps_single_sample_is_absolute_error():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    np.testing.assert_array_equal(crps_from_samples(x[None], y), np.abs(x - y))
    assert mae(x, y) == pytest.approx(np.abs(x - y).mean())


@pytest.mark.parametrize(("n", "shape"), [(2, ()), (7, (5,)), (50, (3, 4)), (101, (2, 1, 3))])
def test_crps_sorted_formula_equals_pairwise_definition(n, shape):
    rng = np.random.default_rng(n)
    samples, y = rng.normal(size=(n, *shape)), rng.normal(size=shape)
    samples[0] = samples[1]  # ties
    crps = crps_from_samples(samples, y)
    assert crps.shape == shape and crps.dtype == np.float64
    np.testing.assert_allclose(crps, _crps_pairs(samples, y), rtol=0, atol=1e-10)
    assert (crps >= 0).all()


def _gaussian_crps(mu, sigma, y):
    """Closed form for N(mu, sigma^2) (Gneiting & Raftery 2007, eq. 21 context)."""
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))


def test_crps_approaches_gaussian_closed_form():
    mu, sigma, n = 1.3, 2.0, 20_000
    y = mu + sigma * np.array([-2.0, -0.5, 0.0, 0.7, 3.0])
    exact = _gaussian_crps(mu, sigma, y)
    # Samples at the N(mu, sigma^2) quantiles (i - 1/2) / N: no Monte Carlo noise, so 1% is loose.
    quantiles = mu + sigma * norm.ppf((np.arange(1, n + 1) - 0.5) / n)
    strat = crps_from_samples(np.repeat(quantiles[:, None], len(y), axis=1), y)
    np.testing.assert_allclose(strat, exact, rtol=0.01)
    # Random draws: the relative Monte Carlo error is about 1% for N = 20,000, so allow 5 of those.
    draws = np.random.default_rng(0).normal(mu, sigma, size=(n, len(y)))
    np.testing.assert_allclose(crps_from_samples(draws, y), exact, rtol=0.05)


def test_metric_shape_errors():
    with pytest.raises(ValueError, match=r"samples \(4, 3\) do not match y \(2,\)"):
        crps_from_samples(np.zeros((4, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="N >= 1"):
        crps_from_samples(np.zeros((0, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="different shapes"):
        mae(np.zeros(3), np.zeros((3, 1)))


# --- a real public series: weekly Mauna Loa CO2 ---------------------------------------------------
def test_co2_weekly_season_and_seasonal_naive(tmp_path):
    pytest.importorskip("statsmodels", reason="the co2 series comes from statsmodels (dev extra)")
    from series_fixtures import write_co2_csv

    path = write_co2_csv(tmp_path / "co2.csv")
    with pytest.raises(DataError, match=r"column 'date' holds '1958-03-29'.*--columns.*'co2'"):
        read_series(path)
    series = read_series(path, columns=["co2"])
    (co2,) = series.sequences
    assert co2.shape == (2284, 1)  # 1958-03-29 .. 2001-12-29, weekly
    splits = time_splits(len(co2))
    assert splits == {"train": (0, 1598), "valid": (1598, 1941), "test": (1941, 2284)}

    season = detect_season(co2[slice(*splits["train"])])
    assert 51 <= season <= 53  # a yearly cycle in weekly data (52.18 weeks)

    # Forecast the test split a season at a time, each forecast from everything seen before it.
    start, stop = splits["test"]

    def forecast(period):
        origins = range(start, stop, season)
        return np.concatenate(
            [seasonal_naive(co2[:o], min(season, stop - o), period) for o in origins]
        )

    seasonal, naive = mae(forecast(season), co2[start:stop]), mae(forecast(1), co2[start:stop])
    assert seasonal < 0.8 * naive  # measured: 1.70 ppm against 2.61 ppm
