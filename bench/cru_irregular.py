"""The CRU against a GRU given the time gaps (the CRU paper's GRU-dt baseline) on an irregular
subsampling of a real series (issue 18).

The data is statsmodels' weekly Mauna Loa CO2 record (2,284 weeks, ppm; see bench/series.py),
of which each run keeps a random half of the weeks (``--subsample-keep 0.5 --subsample-seed 0``,
the same weeks for every row: the CRU paper subsamples its benchmarks the same way), so that the
gaps between kept weeks are 1, 2, 3, ... weeks. Every row is the series family with its
defaults (Gaussian output, differences, windows of 64 steps, splits 70/15/15 by time, Adam at
3e-3 halved on plateaus, patience 10) but batches of 4 windows (the 13 training windows then
give 4 updates an epoch), at the same width (16) and epoch budget (60), one thread; the GRU is
given each step's gap as an input feature,
the CRU through its filter's prediction over the gap. The table gives the test NLL per kept week
and the CRPS and MAE of forecasts over the next h observations (h = the detected season of 52
weeks over the median gap), beside the seasonal-naive forecast in time on the same steps.

    pip install statsmodels
    python bench/cru_irregular.py            # writes the data to bench/out/cru/, trains, reports
    python bench/cru_irregular.py --report   # the table of what has run
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from rows import fmt, result_of, run_rows

COMMON = ["--columns", "co2", "--subsample-keep", "0.5", "--subsample-seed", "0",
          "--hidden-size", "16", "--batch-size", "4", "--threads", "1"]  # fmt: skip
ROWS = {
    "co2-half-cru-16": [*COMMON, "--cell", "cru", "--seed", "0"],
    "co2-half-gru-dt-16": [*COMMON, "--cell", "gru", "--seed", "0"],
    "co2-half-cru-16-stable": [
        *COMMON,
        "--cell",
        "cru",
        "--cell-args",
        "stable=true",
        "--seed",
        "0",
    ],  # fmt: skip
    "co2-half-fcru-16-stable": [
        *COMMON,
        "--cell",
        "cru",
        "--cell-args",
        "fast=true,stable=true",
        "--seed",
        "0",
    ],  # fmt: skip
    "co2-half-gru-dt-16-seed1": [*COMMON, "--cell", "gru", "--seed", "1"],
    "co2-half-cru-16-stable-seed1": [
        *COMMON,
        "--cell",
        "cru",
        "--cell-args",
        "stable=true",
        "--seed",
        "1",
    ],  # fmt: skip
}
EPOCHS = "60"

# A generated benchmark of the paper's kind (its pendulum, without the images): 32 damped
# pendulums, theta'' = -9.81 sin(theta) - 0.1 theta' from random starts, 200 steps of 0.1 s
# observed as (sin theta, cos theta) + N(0, 0.05^2) noise, half the steps kept at random; each
# sequence split 70/15/15 by time; forecasts of the next 10 observations.
PENDULUM = ["--subsample-keep", "0.5", "--subsample-seed", "0", "--transform", "level",
            "--hidden-size", "16", "--horizon", "10", "--threads", "1"]  # fmt: skip
PENDULUM_ROWS = {
    "pendulum-half-cru-16-stable": [
        *PENDULUM,
        "--cell",
        "cru",
        "--cell-args",
        "stable=true",
        "--seed",
        "0",
    ],  # fmt: skip
    "pendulum-half-gru-dt-16": [*PENDULUM, "--cell", "gru", "--seed", "0"],
}
PENDULUM_EPOCHS = "20"


def write_pendulum(path: Path, n_seq: int = 32, steps: int = 200, seed: int = 0) -> Path:
    """The pendulums above, integrated by RK4 at 0.01 s, as an .npz of (steps, 2) arrays."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def f(th: float, om: float) -> tuple[float, float]:
        return om, -9.81 * np.sin(th) - 0.1 * om

    arrays = {}
    for k in range(n_seq):
        th, om, h, xs = rng.uniform(-2.5, 2.5), rng.uniform(-2.0, 2.0), 0.01, []
        for _ in range(steps):
            xs.append(th)
            for _ in range(10):
                k1 = f(th, om)
                k2 = f(th + h / 2 * k1[0], om + h / 2 * k1[1])
                k3 = f(th + h / 2 * k2[0], om + h / 2 * k2[1])
                k4 = f(th + h * k3[0], om + h * k3[1])
                th += h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
                om += h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        x = np.array(xs)
        clean = np.stack([np.sin(x), np.cos(x)], 1)
        arrays[f"s{k:03d}"] = clean + 0.05 * rng.standard_normal((steps, 2))
    np.savez(path, **arrays)
    return path


def write_co2(path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from series_fixtures import write_co2_csv

    return write_co2_csv(path)


def command(name: str, out: Path) -> list[str]:
    if name in PENDULUM_ROWS:
        return ["train", "--data", str(out / "pendulum.npz"), *PENDULUM_ROWS[name], "--epochs",
                PENDULUM_EPOCHS, "--out", str(out / name)]  # fmt: skip
    return ["train", "--data", str(out / "co2.csv"), *ROWS[name], "--epochs", EPOCHS,
            "--out", str(out / name)]  # fmt: skip


def report(out: Path) -> None:
    print("| row | params | epochs (best) | test NLL (nats/step) | horizon | CRPS | MAE | "
          "seasonal-naive CRPS = MAE | CRPS skill | wall s |")  # fmt: skip
    print("| --- " * 10 + "|")
    rows = []
    for name in [*ROWS, *PENDULUM_ROWS]:
        r = result_of(out / name)
        if not r:
            continue
        rows.append({"row": name, **r, "command": "rnnlab " + shlex.join(command(name, out))})
        print(f"| {name} | {fmt(r.get('num_params'), ',')} | {r['epochs_run']} "
              f"({r.get('best_epoch')}) | {fmt(r.get('test_nll'), '.3f')} | {r.get('horizon')} "
              f"| {fmt(r.get('test_crps'), '.3f')} | {fmt(r.get('test_mae'), '.3f')} | "
              f"{fmt(r.get('test_naive_crps'), '.3f')} | {fmt(r.get('crps_skill'), '.3f')} | "
              f"{fmt(r.get('wall_time_s'), '.0f')} |")  # fmt: skip
    for row in rows:
        print(f"- {row['row']}: `{row['command']}`")
    (out / "cru.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/out/cru"))
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        if not (args.out / "co2.csv").is_file():
            write_co2(args.out / "co2.csv")
        if not (args.out / "pendulum.npz").is_file():
            write_pendulum(args.out / "pendulum.npz")
        chosen = [r for r in args.rows.split(",") if r] or [*ROWS, *PENDULUM_ROWS]
        run_rows({name: command(name, args.out) for name in chosen}, args.out)
    report(args.out)
