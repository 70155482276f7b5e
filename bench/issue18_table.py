"""The rows of docs/results.md's issue-18 table from the runs of bench/issue18.sh: each run's
test score (and accuracy where the task has one) and the cells' statistics (activity, spike rate,
gate openings) at its best validation epoch, read from result.json and metrics.jsonl.

    python bench/issue18_table.py bench/out/issue18/*/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STATS = ("activity", "spike_rate", "gate_openings")


def row(run: Path) -> str:
    result = json.loads((run / "result.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = next(e for e in epochs if e["epoch"] == result["best_epoch"])
    score = result["score"]["name"]
    figures = [f"test {score} {result['test_score']:.4g}"]
    for key in ("test_accuracy", "test_sequence_accuracy"):
        if key in result:
            figures.append(f"{key[5:]} {result[key]:.4f}")
    figures += [f"{name} {best[f'test_{name}']:.3f}" for name in STATS if f"test_{name}" in best]
    return (f"| {run.name} | {result['cell']} | {result['num_params']:,} | "
            f"{result['best_epoch']}/{result['epochs_run']} | {'; '.join(figures)} | "
            f"{result['wall_time_s']:.0f} |")  # fmt: skip


def main(argv: list[str]) -> None:
    print("| run | cell | params | best epoch / run | test | wall s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in map(Path, argv):
        if (run / "result.json").exists():
            print(row(run))


if __name__ == "__main__":
    main(sys.argv[1:])
