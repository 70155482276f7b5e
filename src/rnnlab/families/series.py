"""Real-valued series, your own data (``rnnlab train --data FILE.csv``, ``.npy``, ``.npz``): a
probabilistic next-step model p(x_t | x_<t), a Gaussian (or a mixture, ``--output gmm``) whose
parameters the recurrent state sets, over inputs normalised by the training part's mean and
standard deviation.

Splits are by time: each sequence's first steps train, the next ``--valid-fraction`` validate and
the last ``--test-fraction`` test, and a split is always scored with the whole history before it
as context. Scores, in the data's own units:

- **NLL per step**: -sum log p(x_t | x_<t) over the split's steps / their number, in nats
  (log p in original units = log p of the normalised value - sum_d log std_d).
- **Forecasts over a horizon** (after training, test split): from origins every ``horizon`` steps,
  ``--forecast-samples`` trajectories are drawn by feeding each sample back; MAE of the median
  forecast and the CRPS of the samples (Gneiting & Raftery 2007), beside the **seasonal-naive**
  forecast (the value one season earlier; its CRPS is its MAE) on the same origins and steps.
  The season is ``--season`` or, at 0, detected from the training part's autocorrelation.

**Irregular steps** (``--time-column`` names a CSV column of time stamps, or ``--subsample-keep
P`` keeps a random share P of each sequence's steps, drawn by ``--subsample-seed``, with the
kept steps' indices as time stamps: the CRU paper's irregular benchmarks). The model is given,
at each step, the time from its input's time stamp to its target's, divided by the median gap of
the training part (``gap_scale``; the first value of a ``level`` series has no input before it
and gets one typical gap): a cell that takes gaps (the CRU) gets them through
``Recurrent(gaps=)``, any other cell as one more input feature (a GRU given dt, the paper's
GRU-dt baseline). Every step counts once in the NLL whatever its gap; differences are changes
over each step's own gap. A forecast horizon of h is the next h *observations* after an origin,
at their own (known) time stamps, which the model is given; the season is in time units (at 0,
detected on the training part interpolated to a grid of the median gap) and the seasonal-naive
forecast of time tau is the last observation at or before tau minus the smallest whole number of
seasons that reaches back to the origin (the last value, without a season).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rnnlab.cells import probe_cell
from rnnlab.console import progress
from rnnlab.data import Batch, make_batches, split_windows
from rnnlab.data.series import (
    Normaliser,
    Series,
    crps_from_samples,
    detect_season,
    read_series,
    seasonal_naive,
    subsample,
    time_splits,
)
from rnnlab.device import model_device, to_device
from rnnlab.errors import ConfigError, DataError, RunDirError
from rnnlab.families.base import (
    Family,
    Problem,
    RecurrentOptions,
    SampleRequest,
    Score,
    TrainOptions,
    default,
    model_config,
    option,
    tail,
)
from rnnlab.models.rnn import RNNPredictor, SequenceLogProb, make_head, make_recurrent

SUFFIXES = (".csv", ".npy", ".npz")
FORECAST_SEED = 2**40 + 31


@dataclass(frozen=True)
class SeriesConfig(TrainOptions, RecurrentOptions):
    family: ClassVar[str] = "series"
    data: str = option("", "a .csv file (a header row, one row per step, numeric columns), or "
                       ".npy/.npz arrays of shape (T, D)", "data")  # fmt: skip
    columns: str = option("", "CSV: the value columns, comma-separated (default: all but the id "
                          "column)", "data")  # fmt: skip
    id_column: str = option("", "CSV: a column whose value separates sequences", "data")
    time_column: str = option("", "CSV: a column of time stamps, increasing within each "
                              "sequence (irregular steps; the model is given each step's gap)",
                              "data")  # fmt: skip
    subsample_keep: float = option(1.0, "keep this share of each sequence's steps, drawn at "
                                   "random: irregular steps from a regular series (1: all)",
                                   "data", positive=True, high=1.0)  # fmt: skip
    subsample_seed: int = option(0, "the seed of the steps --subsample-keep draws", "data",
                                 low=0)  # fmt: skip
    valid_fraction: float = option(0.15, "the share of each sequence's steps that validates "
                                   "(after the training steps)", "data", positive=True,
                                   below=1.0)  # fmt: skip
    test_fraction: float = option(0.15, "the share of each sequence's last steps that tests",
                                  "data", positive=True, below=1.0)  # fmt: skip
    window: int = option(64, "train on windows of this many steps (0: whole training parts)",
                         "data", low=0)  # fmt: skip
    cell: str = default(RecurrentOptions, "cell", "lstm")
    hidden_size: int = default(RecurrentOptions, "hidden_size", 64)
    dropout: float = default(RecurrentOptions, "dropout", 0.0)
    epochs: int = default(TrainOptions, "epochs", 100)
    patience: int = default(TrainOptions, "patience", 10)
    lr_patience: int = default(TrainOptions, "lr_patience", 3)
    transform: str = option("difference", "model each step's change from the previous "
                            "(difference: series with a trend) or the values (level)", "data",
                            choices=("difference", "level"))  # fmt: skip
    output: str = option("gaussian", "the distribution of a step: gaussian (diagonal) or gmm",
                         choices=("gaussian", "gmm"))  # fmt: skip
    mixtures: int = option(5, "components of the gmm output", positive=True, high=1024,
                           requires={"output": ("gmm",)})  # fmt: skip
    horizon: int = option(0, "forecast horizon in steps (0: the season, or 10 without one; "
                          "irregular steps: observations)", "evaluation", low=0)  # fmt: skip
    season: int = option(0, "the seasonal-naive baseline's period (0: detected from the "
                         "training part's autocorrelation; irregular steps: in time units)",
                         "evaluation", low=0)  # fmt: skip
    forecast_samples: int = option(100, "sampled trajectories per forecast (for CRPS)",
                                   "evaluation", positive=True)  # fmt: skip


def read_config_series(cfg: Any) -> Series:
    if not cfg.data:
        raise ConfigError("the series family needs --data FILE (.csv, .npy or .npz)")
    columns = [c.strip() for c in cfg.columns.split(",") if c.strip()] or None
    series = read_series(Path(cfg.data), columns=columns, id_column=cfg.id_column or None,
                         time_column=cfg.time_column or None)  # fmt: skip
    if cfg.subsample_keep < 1.0:
        series = subsample(series, cfg.subsample_keep, cfg.subsample_seed)
    elif cfg.subsample_seed:
        raise ConfigError("--subsample-seed draws the steps --subsample-keep keeps; give "
                          "--subsample-keep below 1 or leave the seed out")  # fmt: skip
    return series


def irregular(cfg: Any) -> bool:
    """Whether the run's steps have time stamps (a time column or a subsample)."""
    return bool(getattr(cfg, "time_column", "")) or getattr(cfg, "subsample_keep", 1.0) < 1.0


def row_gaps(times: np.ndarray, transform: str) -> np.ndarray:
    """Each modelled row's gap from the step before it: for differences row r is step r + 1,
    so its gap is times[r + 1] - times[r]; for levels row 0 has none (NaN)."""
    steps = np.diff(times)
    return steps if transform == "difference" else np.concatenate([[np.nan], steps])


def modelled(x: np.ndarray, transform: str) -> np.ndarray:
    """What the network models: each step's change x_t - x_{t-1} (``difference``: T - 1 rows,
    row t - 1 for step t) or the values themselves (``level``). The shift by x_{t-1}, which is
    known when x_t is predicted, leaves log p(x_t | x_<t) unchanged."""
    return np.diff(x, axis=0) if transform == "difference" else x


class SeriesProblem(Problem):
    def __init__(self, cfg: SeriesConfig, assets: dict[str, Any] | None) -> None:
        self.cfg = cfg
        series = read_config_series(cfg)
        self.series = series
        # Step t of a sequence is row t - offset of what is modelled.
        self.offset = 1 if cfg.transform == "difference" else 0
        self.ranges = [time_splits(len(s), cfg.valid_fraction, cfg.test_fraction)
                       for s in series.sequences]  # fmt: skip
        values = [modelled(x, cfg.transform) for x in series.sequences]
        train_parts = [v[: r["train"][1] - self.offset]
                       for v, r in zip(values, self.ranges, strict=True)]  # fmt: skip
        self.irregular = series.times is not None
        self.season: float
        if self.irregular:
            assert series.times is not None
            gaps = [row_gaps(t, cfg.transform) for t in series.times]
            train_gaps = np.concatenate([g[: len(p)] for g, p in zip(gaps, train_parts,
                                                                     strict=True)])  # fmt: skip
            self.gap_scale = float(np.nanmedian(train_gaps)) if assets is None else float(
                assets["gap_scale"])  # fmt: skip
            self.gaps = [torch.from_numpy(np.nan_to_num(g / self.gap_scale, nan=1.0)).float()
                         for g in gaps]  # fmt: skip
        if assets is not None:
            self.normaliser = Normaliser.from_dict(assets["normaliser"])
            self.season, self.horizon = float(assets["season"]), int(assets["horizon"])
        else:
            self.normaliser = Normaliser.fit(train_parts)
            longest = max(range(len(values)), key=lambda k: self.ranges[k]["train"][1])
            x = series.sequences[longest]
            end = self.ranges[longest]["train"][1]
            if self.irregular:
                assert series.times is not None
                self.season = cfg.season or self._detect_season_in_time(
                    series.times[longest][:end], x[:end])  # fmt: skip
                typical = self.season / float(np.median(np.diff(series.times[longest][:end])))
                self.horizon = cfg.horizon or (round(typical) if self.season > 0 else 10)
            else:
                self.season = cfg.season or detect_season(x[:end])
                self.horizon = cfg.horizon or (int(self.season) if self.season > 1 else 10)
        if assets is not None and series.dim != int(assets["dim"]):
            raise DataError(f"{cfg.data} has {series.dim} value column(s); the model was trained "
                            f"on {assets['dim']} ({', '.join(assets['columns'])})")  # fmt: skip
        test_len = min(r["test"][1] - r["test"][0] for r in self.ranges)
        if cfg.horizon > test_len:
            raise ConfigError(f"--horizon {cfg.horizon} is longer than the shortest test part "
                              f"({test_len} steps)")  # fmt: skip
        self.horizon = min(self.horizon, test_len)  # a detected season may exceed it
        history = min(r["test"][0] for r in self.ranges)
        if not self.irregular and self.season > history:
            raise ConfigError(f"--season {self.season} is longer than the history before the "
                              f"test part ({history} steps)")  # fmt: skip
        self.scaled = [torch.from_numpy(self.normaliser.apply(v)).float() for v in values]
        self.first_inputs: list[torch.Tensor] | None = None
        self.train = [z[: len(p)] for z, p in zip(self.scaled, train_parts, strict=True)]
        if self.irregular:  # each row's gap rides along as a last column (split off per batch)
            self.train = [torch.cat([z, g[: len(z), None]], 1)
                          for z, g in zip(self.train, self.gaps, strict=True)]  # fmt: skip
        if cfg.window:
            self.train, self.first_inputs = split_windows(self.train, cfg.window)
        self.model = build_series_model(cfg, series.dim, self.normaliser)
        self.forecast: dict[str, Any] = {}

    @staticmethod
    def _detect_season_in_time(times: np.ndarray, x: np.ndarray) -> float:
        """The season in time units of an irregular stretch: ``detect_season`` on the values
        interpolated to a grid of the median gap, its lag times that gap (0: none)."""
        step = float(np.median(np.diff(times)))
        grid = np.arange(times[0], times[-1] + step / 2, step)
        regular = np.stack([np.interp(grid, times, x[:, d]) for d in range(x.shape[1])], 1)
        lag = detect_season(regular)
        return lag * step if lag > 1 else 0.0

    def assets(self) -> dict[str, Any]:
        return {"normaliser": self.normaliser.to_dict(), "columns": self.series.columns,
                "dim": self.series.dim, "season": self.season, "horizon": self.horizon,
                "transform": self.cfg.transform, "data": self.series.describe(),
                "gap_scale": self.gap_scale if self.irregular else None}  # fmt: skip

    def train_batches(self, epoch: int) -> Iterable[Batch]:
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return make_batches(self.train, self.cfg.batch_size, shuffle=True, generator=generator,
                            first_inputs=self.first_inputs)  # fmt: skip

    def batch_loss(self, batch: Batch) -> tuple[torch.Tensor, float, float]:
        if self.irregular:  # the last column is each row's gap
            D = self.series.dim
            first = None if batch.first_input is None else batch.first_input[:, :D]
            out = self.model(batch.x[..., :D], batch.lengths, first, gaps=batch.x[..., D])
        else:
            out = self.model(batch.x, batch.lengths, batch.first_input)
        frames = batch.num_frames
        log_det = self.normaliser.log_det()
        # Reported in the data's units; the loss itself is the normalised NLL per step.
        return out.nll_per_frame, -float(out.total.detach()) + frames * log_det, frames

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Any]:
        """The NLL per step of a split, each step predicted from its whole history."""
        model = self.model
        was_training = model.training
        model.eval()
        total, steps = 0.0, 0
        device = model_device(model)
        for k, (z, r) in enumerate(zip(self.scaled, self.ranges, strict=True)):
            start, end = (max(0, t - self.offset) for t in r[split])
            gaps = {"gaps": self.gaps[k][None, :end].to(device)} if self.irregular else {}
            out = model(z[None, :end].to(device), torch.tensor([end], device=device), **gaps)
            total += float(out.log_prob[0, start:end].double().sum())
            steps += end - start
        model.train(was_training)
        nll = -total / steps + self.normaliser.log_det()
        return {"score": nll if math.isfinite(nll) else math.nan, "steps": steps}

    def finalise(self) -> None:
        self.forecast = self.forecast_scores("test")

    @torch.no_grad()
    def forecast_scores(self, split: str) -> dict[str, Any]:
        """MAE and CRPS of sampled forecasts over the horizon from origins every ``horizon``
        steps of the split, beside the seasonal-naive forecast's on the same steps."""
        h, n = self.horizon, self.cfg.forecast_samples
        gen = torch.Generator().manual_seed(FORECAST_SEED)
        crps, errors, naive, origins_used = [], [], [], 0
        sequences = zip(self.series.sequences, self.scaled, self.ranges, strict=True)
        for k, (x, z, r) in enumerate(progress(sequences, f"forecasts, {split}",
                                               len(self.ranges))):  # fmt: skip
            start, end = r[split]
            origins = list(range(start, end - h + 1, h))
            origins_used += len(origins)
            histories = [z[: o - self.offset] for o in origins]
            # each history's rows' gaps and the horizon's (known time stamps)
            gaps = ([self.gaps[k][: o - self.offset + h] for o in origins] if self.irregular
                    else None)  # fmt: skip
            draws = sample_paths(self.model, histories, h, n, gen, gaps)  # (N, O, h, D)
            lasts = np.stack([x[o - 1] for o in origins])  # (O, D)
            samples = to_values(self.normaliser, draws, lasts, self.cfg.transform)
            truth = np.stack([x[o : o + h] for o in origins])  # (O, h, D)
            crps.append(crps_from_samples(samples, truth).ravel())
            errors.append(np.abs(np.median(samples, 0) - truth).ravel())
            if self.irregular:
                assert self.series.times is not None
                t = self.series.times[k]
                base = np.stack([seasonal_naive_in_time(t[:o], x[:o], t[o : o + h], self.season)
                                 for o in origins])  # fmt: skip
            else:
                base = np.stack([seasonal_naive(x[:o], h, int(self.season)) for o in origins])
            naive.append(np.abs(base - truth).ravel())
        model_crps = float(np.concatenate(crps).mean())
        naive_mae = float(np.concatenate(naive).mean())
        return {
            f"{split}_crps": model_crps,
            f"{split}_mae": float(np.concatenate(errors).mean()),
            f"{split}_naive_crps": naive_mae,  # a point forecast's CRPS is its absolute error
            f"{split}_naive_mae": naive_mae,
            "crps_skill": 1.0 - model_crps / naive_mae if naive_mae > 0 else None,
            "season": self.season,
            "horizon": h,
            "irregular": self.irregular,
            "forecast_samples": n,
            "forecast_origins": origins_used,
        }

    def result(self, valid: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
        return {"valid_nll": valid.get("score"), "test_nll": test.get("score"), **self.forecast,
                "columns": self.series.columns}  # fmt: skip


def to_values(normaliser: Normaliser, draws: torch.Tensor, lasts: np.ndarray,
              transform: str) -> np.ndarray:  # fmt: skip
    """Sampled paths (N, O, h, D) of the modelled quantity back in the data's values: the
    normalisation undone and, for differences, summed from each origin's last value (O, D)."""
    values = normaliser.invert(draws.double().cpu().numpy())
    if transform == "difference":
        values = lasts[None, :, None, :] + np.cumsum(values, axis=2)
    return values


def build_series_model(cfg: Any, dim: int, normaliser: Normaliser) -> nn.Module:
    config = model_config(cfg, "rnn", cfg.output, frame_size=dim, mixtures=cfg.mixtures)
    model = GapPredictor(config) if irregular(cfg) else RNNPredictor(config)
    model.normaliser = normaliser  # type: ignore[assignment]
    return model


class GapPredictor(RNNPredictor):
    """``RNNPredictor`` over irregular steps: ``gaps`` (B, T) is the time from each step's input
    to its target; a cell that takes gaps (``Cell.takes_gaps``: the CRU) gets them through
    ``Recurrent(gaps=)``, any other as one more input feature (a GRU given dt: GRU-dt)."""

    def __init__(self, config: Any) -> None:
        nn.Module.__init__(self)
        self.config = config
        self.takes_gaps = probe_cell(config.cell).takes_gaps
        self.rnn = make_recurrent(config, config.frame_size + (0 if self.takes_gaps else 1))
        self.head: Any = make_head(config)

    def run(self, inputs: torch.Tensor, lengths: torch.Tensor | None, state: Any,
            gaps: torch.Tensor) -> tuple[torch.Tensor, Any]:  # fmt: skip
        """The recurrent stack over inputs (B, T, D) with their gaps (B, T)."""
        if self.takes_gaps:
            return self.rnn(inputs, lengths=lengths, state=state, gaps=gaps)  # type: ignore[no-any-return]
        return self.rnn(torch.cat([inputs, gaps.unsqueeze(-1)], -1), lengths=lengths,
                        state=state)  # type: ignore[no-any-return]  # fmt: skip

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, lengths: torch.Tensor, first_input: torch.Tensor | None = None,
        gaps: torch.Tensor | None = None,
    ) -> SequenceLogProb:  # fmt: skip
        if gaps is None:
            raise ConfigError("a model of irregular steps needs each step's gap (gaps=)")
        B, T, D = x.shape
        first = x.new_zeros(B, 1, D) if first_input is None else first_input.view(B, 1, D)
        inputs = torch.cat([first, x[:, :-1]], dim=1)  # x_{t-1}, gaps[t] before x_t
        h, _ = self.run(inputs, lengths, None, gaps)
        h = nn.functional.dropout(h, self.config.dropout, self.training)
        valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
        log_prob = torch.where(valid, self.head.log_prob(x, h), 0.0)  # (B, T)
        return SequenceLogProb(log_prob, log_prob.sum(), int(lengths.sum()))


def seasonal_naive_in_time(times: np.ndarray, history: np.ndarray, targets: np.ndarray,
                           season: float) -> np.ndarray:  # fmt: skip
    """The seasonal-naive forecast at time stamps ``targets`` (h,) from a history (T, D) at
    ``times`` (T,): for tau, the last observation at or before tau - k season, k the smallest
    whole number with tau - k season <= the history's last time; the last value without a
    season (0)."""
    origin = times[-1]
    if season <= 0:
        return np.repeat(history[-1:], len(targets), 0)
    k = np.ceil((targets - origin) / season)
    at = np.searchsorted(times, targets - k * season + 1e-9 * season, side="right") - 1
    if (at < 0).any():
        raise DataError(f"a history from time {times[0]:g} is shorter than the season of "
                        f"{season:g} time units; the seasonal naive forecast needs one full "
                        "season")  # fmt: skip
    return history[at]


@torch.no_grad()
def sample_paths(model: nn.Module, histories: list[torch.Tensor], horizon: int, n: int,
                 gen: torch.Generator,
                 gaps: list[torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """``n`` sampled continuations of ``horizon`` steps after each history (normalised values,
    (T_i, D) each): (n, len(histories), horizon, D). Each history is read once; its final state
    is copied n times and every sampled step is fed back. Irregular steps: ``gaps[i]``
    (T_i + horizon,) are the gaps of history i's rows and of the horizon's."""
    model.eval()
    D = histories[0].shape[-1]
    device = model_device(model)
    lengths = torch.tensor([len(x) + 1 for x in histories])
    inputs = torch.zeros(len(histories), int(lengths.max()), D)
    input_gaps = torch.zeros(len(histories), int(lengths.max()))
    for b, x in enumerate(histories):  # inputs: a zero frame, then the history
        inputs[b, 1 : len(x) + 1] = x
        if gaps is not None:  # input p reads row p - 1 and predicts row p
            input_gaps[b, : len(x) + 1] = gaps[b][: len(x) + 1]
    inputs, lengths, input_gaps = to_device((inputs, lengths, input_gaps), device)

    def rnn(x: torch.Tensor, lengths: Any, state: Any, g: torch.Tensor | None) -> Any:
        if gaps is None:
            return model.rnn(x, lengths=lengths, state=state)  # type: ignore[operator]
        return model.run(x, lengths, state, g)  # type: ignore[operator]

    out, state = rnn(inputs, lengths, None, input_gaps)
    rows = torch.arange(len(histories), device=out.device)
    h = out[rows, lengths - 1]  # (O, H): predicts the first step ahead
    h = h.repeat(n, 1)[:, None]  # (n O, 1, H), trajectory i of origin o at i * O + o
    state = tuple(s.repeat(1, n, 1) for s in state)
    ahead = None
    if gaps is not None:  # the gap before each sampled step's successor, (n O, horizon)
        ahead = torch.stack([g[len(x) + 1 : len(x) + horizon]
                             for g, x in zip(gaps, histories, strict=True)])  # fmt: skip
        ahead = ahead.to(device).repeat(n, 1)
    steps = []
    for t in range(horizon):
        frame = model.head.sample(h, gen)  # type: ignore[union-attr,operator]
        steps.append(frame)
        if t + 1 < horizon:
            h, state = rnn(frame, None, state, None if ahead is None else ahead[:, t : t + 1])
    return torch.cat(steps, 1).view(n, len(histories), horizon, D)


class SeriesFamily(Family):
    name = "series"
    title = "real-valued series from your CSV or arrays: Gaussian / mixture next-step model"
    config_type = SeriesConfig
    score = Score("nll", "NLL", "nats/step")
    draws = "frames"
    sample_suffixes = (".csv",)

    def accepts(self, data: str, options: dict[str, Any]) -> bool:
        suffix = Path(data).suffix.lower()
        if suffix == ".npz":
            from rnnlab.data.polyphonic import is_polyphonic

            return not is_polyphonic(data)
        return suffix in SUFFIXES

    def data_help(self) -> str:
        return "a .csv file with a header row, or .npy/.npz arrays of shape (T, D)"

    def build_model(self, cfg: Any, assets: dict[str, Any]) -> nn.Module:
        return build_series_model(
            cfg, int(assets["dim"]), Normaliser.from_dict(assets["normaliser"])
        )

    def problem(self, cfg: Any, assets: dict[str, Any] | None = None) -> Problem:
        return SeriesProblem(cfg, assets)

    def summary(self, result: dict[str, Any], out: Path) -> str:
        head = (f"{result['data']} series/{result['cell']}: test NLL "
                f"{_f(result.get('test_nll'))} nats/step at the best validation epoch "
                f"{result['best_epoch']} (valid {_f(result.get('valid_nll'))})")  # fmt: skip
        if result.get("test_crps") is not None:
            head += (f"; {result['horizon']}-step forecasts: CRPS {result['test_crps']:.4g}, "
                     f"MAE {result['test_mae']:.4g} against the seasonal-naive (season "
                     f"{result['season']}) {result['test_naive_crps']:.4g}")  # fmt: skip
        return f"{head}; {tail(result, out)}"

    def sample(self, model: nn.Module, cfg: Any, assets: dict[str, Any],
               request: SampleRequest) -> list[str]:  # fmt: skip
        """A forecast past the end of the data (of its first sequence): quantiles as CSV, and a
        plot of the history with the median and the 50% and 80% bands."""
        try:
            series = read_config_series(cfg)
        except DataError as exc:
            raise DataError(f"forecasting continues the run's data: {exc}") from None
        normaliser = Normaliser.from_dict(assets["normaliser"])
        horizon = request.frames or int(assets["horizon"])
        if not 1 <= horizon <= 10**6:
            raise RunDirError(f"assets.json: the forecast horizon must be positive, got {horizon}")
        x = series.sequences[0]
        transform = assets.get("transform", "level")
        gen = torch.Generator().manual_seed(request.seed)
        z = torch.from_numpy(normaliser.apply(modelled(x, transform))).float()
        gaps, spacing = None, ""
        if irregular(cfg):  # the future's time stamps are unknown: one typical gap apart
            assert series.times is not None
            scale = float(assets["gap_scale"])
            known = np.nan_to_num(row_gaps(series.times[0], transform) / scale, nan=1.0)
            gaps = [torch.from_numpy(np.concatenate([known, np.ones(horizon)])).float()]
            spacing = f", one median gap ({scale:g} time units) apart"
        draws = sample_paths(model, [z], horizon, 200, gen, gaps)  # (200, 1, h, D)
        samples = to_values(normaliser, draws, x[-1:], transform)[:, 0]  # (200, h, D)
        quantiles = np.quantile(samples, [0.1, 0.25, 0.5, 0.75, 0.9], axis=0)  # (5, h, D)
        lines = []
        if request.out is not None:
            write_forecast_csv(request.out, quantiles, series.columns, len(x))
            lines.append(f"forecast: {request.out} ({horizon} steps past step {len(x)}{spacing}, "
                         "quantiles 0.1 0.25 0.5 0.75 0.9 of 200 draws)")  # fmt: skip
        if request.png is not None:
            plot_forecast(request.png, x, quantiles, series.columns, request.run_label)
            lines.append(f"forecast plot: {request.png}")
        if not lines:
            raise ConfigError("sample needs --out forecast.csv, --png forecast.png, or both")
        return lines


def write_forecast_csv(path: Path, quantiles: np.ndarray, columns: list[str], start: int) -> None:
    from rnnlab.files import atomic_write_text

    rows = ["step,column,q10,q25,median,q75,q90"]
    for t in range(quantiles.shape[1]):
        for d, name in enumerate(columns):
            qs = ",".join(f"{quantiles[k, t, d]:.6g}" for k in range(5))
            rows.append(f"{start + t},{name},{qs}")
    atomic_write_text(Path(path), "\n".join(rows) + "\n")


def plot_forecast(path: Path, x: np.ndarray, quantiles: np.ndarray, columns: list[str],
                  title: str) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(len(columns), 4)
    horizon = quantiles.shape[1]
    past = min(len(x), 4 * horizon)
    fig, axes = plt.subplots(shown, 1, figsize=(9, 2.6 * shown + 0.6), squeeze=False)
    t_past = np.arange(len(x) - past, len(x))
    t_future = np.arange(len(x), len(x) + horizon)
    for d, ax in enumerate(axes[:, 0]):
        ax.plot(t_past, x[-past:, d], color="k", lw=1, label="data")
        ax.fill_between(t_future, quantiles[0, :, d], quantiles[4, :, d], alpha=0.2, color="C0",
                        label="80%")  # fmt: skip
        ax.fill_between(t_future, quantiles[1, :, d], quantiles[3, :, d], alpha=0.35, color="C0",
                        label="50%")  # fmt: skip
        ax.plot(t_future, quantiles[2, :, d], color="C0", lw=1.5, label="median")
        ax.set_ylabel(columns[d])
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(f"forecast: {title}")
    axes[0, 0].legend(fontsize=8, loc="upper left")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"
