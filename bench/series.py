"""Series benchmark: the real-valued series family on a real public series (issue 15).

The data is statsmodels' weekly Mauna Loa CO2 record (March 1958 - December 2001, 2284 weeks,
ppm; 59 missing weeks filled by linear interpolation), which statsmodels carries offline; rnnlab
ships no data of its own. The row is an exact ``rnnlab train`` command with the family's
defaults (LSTM 64, Gaussian output, windows of 64 weeks, splits 70/15/15 by time, the season
detected from the training part); the table gives the test NLL per week and the CRPS and MAE of
forecasts over the horizon against the seasonal-naive forecast on the same test weeks.

    pip install statsmodels
    python bench/series.py            # writes bench/out/series/co2.csv, trains, reports
    python bench/series.py --report   # the table of what has run
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from rows import fmt, result_of, run_rows

ROWS = {
    "co2-lstm-64": ["--columns", "co2", "--seed", "0", "--threads", "1"],
    "co2-lstm-64-seed1": ["--columns", "co2", "--seed", "1", "--threads", "1"],
    # The same model on the values themselves: the test weeks lie above every training value.
    "co2-lstm-64-level": ["--columns", "co2", "--transform", "level", "--seed", "0",
                          "--threads", "1"],
}  # fmt: skip


def write_co2(path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from series_fixtures import write_co2_csv

    return write_co2_csv(path)


def command(name: str, out: Path) -> list[str]:
    return ["train", "--data", str(out / "co2.csv"), *ROWS[name], "--epochs", "100",
            "--out", str(out / name)]  # fmt: skip


def report(out: Path) -> None:
    print("| row | params | epochs | test NLL (nats/week) | horizon | season | CRPS | MAE | "
          "seasonal-naive CRPS = MAE | CRPS skill | wall s |")  # fmt: skip
    print("| --- " * 11 + "|")
    rows = []
    for name in ROWS:
        r = result_of(out / name)
        if not r:
            continue
        rows.append({"row": name, **r, "command": "rnnlab " + shlex.join(command(name, out))})
        print(f"| {name} | {fmt(r.get('num_params'), ',')} | {r['epochs_run']} | "
              f"{fmt(r.get('test_nll'), '.3f')} | {r.get('horizon')} | {r.get('season')} | "
              f"{fmt(r.get('test_crps'), '.3f')} | {fmt(r.get('test_mae'), '.3f')} | "
              f"{fmt(r.get('test_naive_crps'), '.3f')} | {fmt(r.get('crps_skill'), '.3f')} | "
              f"{fmt(r.get('wall_time_s'), '.0f')} |")  # fmt: skip
    for row in rows:
        print(f"- {row['row']}: `{row['command']}`")
    (out / "series.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/out/series"))
    parser.add_argument("--report", action="store_true", help="only print the table")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        if not (args.out / "co2.csv").is_file():
            write_co2(args.out / "co2.csv")
        run_rows({name: command(name, args.out) for name in ROWS}, args.out)
    report(args.out)
