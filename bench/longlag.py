"""Long-time-lag benchmark: the rows of docs/results.md for issue 4.

Each row is an exact ``rnnlab train`` command; the benchmark runs the rows that have no result yet
(continuing interrupted ones with --resume), then prints a markdown table and writes JSON.

    python bench/longlag.py --rows adding                   # one group
    python bench/longlag.py --rows recall --plot docs/recall.png
    python bench/longlag.py --report                        # the table of what has finished

Published figures:
  Bai et al. 2018, Table 1 (about 70K parameters): adding problem T=600, test MSE: LSTM 0.164,
  GRU 5.3e-5; copy memory T=1000, test loss: LSTM 0.0204, GRU 0.0197 (the trivial 0.0203).
  Hochreiter & Schmidhuber 1997, Table 7: adding problem T=1000 solved, all but a handful of
  2560 test sequences right (absolute error < 0.04).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from rows import fmt as _fmt
from rows import options
from rows import result_of as _result
from rows import run_rows as shared_run_rows

from rnnlab.report import run_summary

COMMON = dict(batch_size=32, clip=1.0, seed=0, threads=1, patience=30, lr_patience=10)
ADDING = COMMON | dict(data="adding", seq_len=600, lr=0.001, chrono=600, epochs=140)
COPY = COMMON | dict(data="copy", seq_len=1000, lr=0.001, chrono=1000, epochs=60)
HS_ADDING = COMMON | dict(data="hs-adding", seq_len=1000, lr=0.001, chrono=1000, epochs=120)
RECALL = COMMON | dict(data="recall", hidden_size=64, lr=0.003, epochs=60, patience=0)
DELAYS = (1, 2, 5, 10, 20, 30, 50, 100)
RECALL_CELLS = ("tanh", "gru", "lstm")

# name -> (group, published figure and source, target, train arguments); a row meets its target
# when its test loss is at most the target (for hs-adding: when result.json says solved).
ROWS: dict[str, tuple[str, str, float | None, list[str]]] = {
    "adding-600-lstm": (
        "adding", "0.164 (Bai 2018, LSTM, ~70K params)", 1e-4,
        options(cell="lstm", hidden_size=130, **ADDING),
    ),
    "adding-600-gru": (
        "adding", "5.3e-5 (Bai 2018, GRU, ~70K params)", 1e-4,
        options(cell="gru", hidden_size=150, **ADDING),
    ),
    "copy-1000-gru": (
        "copy", "0.0197 (Bai 2018, GRU; trivial 0.0203)", 1e-3,
        options(cell="gru", hidden_size=128, **COPY),
    ),
    "copy-1000-lstm": (
        "copy", "0.0204 (Bai 2018, LSTM; trivial 0.0203)", 1e-3,
        options(cell="lstm", hidden_size=128, **COPY),
    ),
    "hs-adding-1000-lstm-v": (
        "hs-adding", "solved, all but a handful wrong (Hochreiter 1997, Table 7)", None,
        options(cell="lstm-v", hidden_size=32, **HS_ADDING),
    ),
    **{
        f"recall-{cell}-k{k}": (
            "recall", "-", None,
            options(cell=cell, seq_len=k + 50, delay=k, **RECALL),
        )
        for cell in RECALL_CELLS
        for k in DELAYS
    },
}  # fmt: skip


def command(name: str, out: Path) -> list[str]:
    return ["train", *ROWS[name][3], "--out", str(out / name)]


def run_rows(names: list[str], out: Path) -> None:
    shared_run_rows({name: command(name, out) for name in names}, out)


def report(out: Path) -> list[dict[str, object]]:
    """Print the markdown table of every row that has started, and write it as JSON."""
    rows = []
    print(
        "| row | params | seed | epochs | test loss | metric | wrong | trivial loss | solved "
        "| target | meets it | published | wall s | status |"
    )
    print("| --- " * 14 + "|")
    for name, (group, published, target, args) in ROWS.items():
        run = out / name
        if not (run / "config.json").is_file():
            continue
        s = run_summary(run)
        r = _result(run)
        trivial = r.get("trivial") or {}
        metric = next((k for k in trivial if k not in ("loss", "predictor")), None)
        loss = r.get("test_loss")
        meets = None
        if r:
            meets = bool(r["solved"]) if target is None else loss is not None and loss <= target
        rows.append(
            {
                "row": name, "group": group, "published": published, "target": target,
                "meets_target": meets, **s, **r,
                "command": "rnnlab " + shlex.join(command(name, out)),
            }
        )  # fmt: skip
        value = None if metric is None else r.get(f"test_{metric}")
        print(
            f"| {name} | {_fmt(s.get('num_params'), ',')} | {args[args.index('--seed') + 1]} | "
            f"{s.get('epochs_run')} | {_fmt(loss, '.3g')} | "
            f"{'-' if value is None else f'{metric} {value:.4f}'} | "
            f"{_fmt(r.get('test_wrong'), '.0f')}/{_fmt(r.get('test_count'), '.0f')} | "
            f"{_fmt(trivial.get('loss'), '.4g')} | {r.get('solved', '-')} | "
            f"{_fmt(target, 'g')} | {'-' if meets is None else 'yes' if meets else 'no'} | "
            f"{published} | {_fmt(s.get('wall_time_s'), '.0f')} | {s.get('status')} |"
        )
    print()
    for name in ROWS:
        if (out / name / "config.json").is_file():
            print(f"- {name}: `rnnlab {shlex.join(command(name, out))}`")
    (out / "longlag.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def recall_curve(out: Path, png: Path | None) -> None:
    """Test accuracy (over the targeted steps) against the delay k, per cell: a table and a plot."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for cell in RECALL_CELLS:
        for k in DELAYS:
            r = _result(out / f"recall-{cell}-k{k}")
            if r:
                curves.setdefault(cell, []).append((k, float(r["test_step_accuracy"])))
    if not curves:
        return
    print("| k | " + " | ".join(curves) + " |")
    print("| --- " * (len(curves) + 1) + "|")
    for k in DELAYS:
        cells = [dict(curves[c]).get(k) for c in curves]
        print(f"| {k} | " + " | ".join(_fmt(v, ".4f") for v in cells) + " |")
    if png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for cell, points in curves.items():
            ks, acc = zip(*points, strict=True)
            ax.plot(ks, acc, marker="o", label=cell)
        ax.axhline(1 / 8, color="grey", linestyle=":", label="chance (1/8)")
        ax.set_xscale("log")
        ax.set_xlabel("delay k (steps)")
        ax.set_ylabel("test accuracy on the recalled symbols")
        ax.set_title("Delayed recall, H=64, up to 60 epochs of 3,200 sequences")
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=120)
        print(f"\nplot: {png}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", default="all", help="all, a group name, or comma-separated rows")
    parser.add_argument("--out", type=Path, default=Path("bench/out/longlag"))
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument("--plot", type=Path, default=None, help="the recall curve as a PNG")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        if args.rows == "all":
            names = list(ROWS)
        else:
            wanted = args.rows.split(",")  # in the order given: groups expand in table order
            names = [n for w in wanted for n, (g, _, _, _) in ROWS.items() if w in (g, n)]
        run_rows(names, args.out)
    report(args.out)
    recall_curve(args.out, args.plot)
