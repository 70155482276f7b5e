"""The CTC runs of bench/ctc.sh as a markdown table (docs/results.md), from their result.json
and metrics.jsonl: PER by greedy and beam decoding at the best validation epoch, the baselines,
and the cells' own statistics (the spiking cells' spike rate) on the test set at that epoch.

    python bench/ctc_table.py bench/out/ctc/lstm bench/out/ctc/gru ...
"""

import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    result = json.loads((run / "result.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = next(r for r in rows if r["epoch"] == result["best_epoch"])
    rate = best.get("test_spike_rate")
    return (
        f"| {run.name} | {result['cell']} | {result['hidden_size']} x {result['num_layers']} | "
        f"{result['num_params']:,} | {result['best_epoch']} / {result['epochs_run']} | "
        f"{result['valid_per']:.2f} | **{result['test_per']:.2f}** | "
        f"{result['test_per_beam']:.2f} | {result['baseline_frequent_phone_per']:.2f} | "
        f"{'-' if rate is None else f'{rate:.3f}'} | {result['wall_time_s']:.0f} |"
    )


def main() -> None:
    print(
        "| run | cell | units x layers (each way) | params | best epoch / epochs | valid PER "
        "| test PER (greedy) | test PER (beam 8) | most-frequent-phone PER | spike rate "
        "(test) | wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for arg in sys.argv[1:]:
        print(row(Path(arg)))


if __name__ == "__main__":
    main()
