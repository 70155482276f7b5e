"""Quality benchmark: polyphonic-music test NLL against published tables.

Each row is an exact ``rnnlab train`` command; the benchmark runs the rows that have no result
yet (continuing interrupted ones with --resume), then prints a markdown table and writes JSON.

    python bench/polyphonic.py --rows chung-jsb            # one group
    python bench/polyphonic.py --rows all --out bench/out  # everything (hours on 2 cores)
    python bench/polyphonic.py --report                    # the table of what has finished

Published figures (test NLL, nats per frame):
  Chung et al. 2014, Table 2 (about 20K parameters): JSB tanh 9.10, GRU 8.54, LSTM 8.67;
  Nottingham tanh 3.13, GRU 3.23, LSTM 3.20.
  Bai et al. 2018, Table 2 (recurrent baselines): JSB GRU 8.43, LSTM 8.45; Nottingham LSTM 3.29,
  GRU 3.46.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from rows import fmt as _fmt
from rows import options
from rows import run_rows as shared_run_rows

from rnnlab.report import run_summary

# The rows below were measured on the step-by-step backend (the only one when they ran); they
# name it so that their commands reproduce them exactly.
SMALL = dict(
    backend="step",
    dropout=0.0,
    lr=0.01,
    batch_size=16,
    epochs=300,
    patience=30,
    lr_patience=8,
    seed=0,
    threads=1,
)
# Nottingham's pieces are long (up to 1,793 frames): 50-frame windows give several times more
# updates per epoch for the same work.
NOTTINGHAM_SMALL = SMALL | dict(patience=20, lr_patience=6, window=50)
# Chung et al. trained with weight noise (std 0.075): without it the small GRU overfits JSB (train
# 7.9, valid 8.6) and every small model overfits Nottingham (train 3.5, valid 4.0).
NOISY = dict(lr=0.003, weight_noise=0.075)
LARGE = dict(
    backend="step",
    lr=0.003,
    batch_size=16,
    epochs=200,
    patience=20,
    lr_patience=5,
    seed=0,
    threads=1,
)
NOTTINGHAM_LARGE = LARGE | dict(patience=10, lr_patience=3, window=100)

# Chung et al.'s protocol on Nottingham, affordable with the fused backend (about 1 s an epoch for
# these sizes): whole pieces, weight noise, and the learning rate chosen per model by the
# validation NLL among a few candidates.
CHUNG_SEARCH = dict(
    dropout=0.0, batch_size=8, epochs=300, patience=20, lr_patience=6, seed=0, threads=1,
    weight_noise=0.075,
)  # fmt: skip
SEARCH_ROWS: dict[str, tuple[str, str, list[str]]] = {
    f"nottingham-{cell}-{size}-whole-lr{lr}": (
        "chung-nottingham-search",
        f"{published} (Chung 2014, {title})",
        options(data="nottingham", cell=cell, hidden_size=size, lr=lr, **CHUNG_SEARCH),
    )
    for cell, size, title, published, lrs in [
        ("lstm-v", 36, "LSTM", "3.20", (0.001, 0.003, 0.01)),
        ("gru-v1", 46, "GRU", "3.23", (0.001, 0.003, 0.01)),
        ("tanh", 100, "tanh", "3.13", (0.001, 0.003)),
    ]
    for lr in lrs
}

# name -> (group, published figure and source, train arguments)
ROWS: dict[str, tuple[str, str, list[str]]] = {
    "jsb-lstm-v-36": (
        "chung-jsb",
        "8.67 (Chung 2014, LSTM)",
        options(data="jsb", cell="lstm-v", hidden_size=36, **SMALL),
    ),
    "jsb-gru-v1-46": (
        "chung-jsb",
        "8.54 (Chung 2014, GRU)",
        options(data="jsb", cell="gru-v1", hidden_size=46, **(SMALL | NOISY)),
    ),
    "jsb-tanh-100": (
        "chung-jsb",
        "9.10 (Chung 2014, tanh)",
        options(data="jsb", cell="tanh", hidden_size=100, **SMALL),
    ),
    "nottingham-lstm-v-36": (
        "chung-nottingham",
        "3.20 (Chung 2014, LSTM)",
        options(data="nottingham", cell="lstm-v", hidden_size=36, **(NOTTINGHAM_SMALL | NOISY)),
    ),
    "nottingham-gru-v1-46": (
        "chung-nottingham",
        "3.23 (Chung 2014, GRU)",
        options(data="nottingham", cell="gru-v1", hidden_size=46, **(NOTTINGHAM_SMALL | NOISY)),
    ),
    "nottingham-tanh-100": (
        "chung-nottingham",
        "3.13 (Chung 2014, tanh)",
        options(data="nottingham", cell="tanh", hidden_size=100, **(NOTTINGHAM_SMALL | NOISY)),
    ),
    "jsb-lstm-256-d0.3": (
        "large-jsb",
        "8.43 (Bai 2018, best recurrent: GRU)",
        options(data="jsb", cell="lstm", hidden_size=256, dropout=0.3, **LARGE),
    ),
    "nottingham-lstm-256-d0.3": (
        "large-nottingham",
        "3.29 (Bai 2018, best recurrent: LSTM)",
        options(data="nottingham", cell="lstm", hidden_size=256, dropout=0.3, **NOTTINGHAM_LARGE),
    ),
    **SEARCH_ROWS,
}


def command(name: str, out: Path) -> list[str]:
    return ["train", *ROWS[name][2], "--out", str(out / name)]


def run_rows(names: list[str], out: Path) -> None:
    shared_run_rows({name: command(name, out) for name in names}, out)


def report(out: Path) -> list[dict[str, object]]:
    """Print the markdown table of every row that has started, and write it as JSON."""
    rows = []
    print(
        "| row | params | seed | best epoch | epochs | valid NLL | test NLL | published "
        "| meets it | wall s | status |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (group, published, args) in ROWS.items():
        run = out / name
        if not (run / "config.json").is_file():
            continue
        s = run_summary(run)
        target = float(published.split()[0])
        test = s.get("test_nll")
        meets = None if test is None else bool(test <= target)
        seed = args[args.index("--seed") + 1]
        rows.append(
            {
                "row": name,
                "group": group,
                "published": published,
                "meets_published": meets,
                **s,
                "command": "rnnlab " + shlex.join(command(name, out)),
            }
        )
        print(
            f"| {name} | {_fmt(s.get('num_params'), ',')} | {seed} | {s.get('best_epoch')} | "
            f"{s.get('epochs_run')} | {_fmt(s.get('valid_nll'), '.3f')} | {_fmt(test, '.3f')} | "
            f"{published} | {'-' if meets is None else 'yes' if meets else 'no'} | "
            f"{_fmt(s.get('wall_time_s'), '.0f')} | {s.get('status')} |"
        )
    print()
    for name in ROWS:
        if (out / name / "config.json").is_file():
            print(f"- {name}: `rnnlab {shlex.join(command(name, out))}`")
    (out / "polyphonic.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", default="all", help="all, a group name, or comma-separated rows")
    parser.add_argument("--out", type=Path, default=Path("bench/out/polyphonic"))
    parser.add_argument("--report", action="store_true", help="only print the table")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        if args.rows == "all":
            names = list(ROWS)
        else:
            wanted = args.rows.split(",")
            names = [n for n, (g, _, _) in ROWS.items() if g in wanted or n in wanted]
        run_rows(names, args.out)
    report(args.out)
