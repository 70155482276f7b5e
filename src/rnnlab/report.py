"""Views of finished runs: a markdown comparison table and learning curves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnlab.errors import RunDirError
from rnnlab.train.checkpoint import read_json, stored_parameter_count
from rnnlab.train.loop import CONFIG, METRICS, MODEL, RESULT


def read_history(run: Path) -> list[dict[str, Any]]:
    path = run / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_summary(run: Path) -> dict[str, Any]:
    """One row of a comparison: from result.json, or from the metrics of a run still going."""
    if not (run / CONFIG).is_file():
        raise RunDirError(f"{run} is not a run directory (no {CONFIG})")
    config = read_json(run / CONFIG)
    if (run / RESULT).is_file():
        row: dict[str, Any] = read_json(run / RESULT)
        row["status"] = row.get("stopped", "done")
        return row | {"run": str(run)}
    history = read_history(run)
    key = _score_key(history)
    best = min(history, key=lambda r: r[key]) if history else {}
    return {
        "run": str(run),
        "data": config["train"]["data"],
        "cell": config["model"]["cell"],
        "hidden_size": config["model"]["hidden_size"],
        "num_layers": config["model"]["num_layers"],
        "num_params": stored_parameter_count(run / MODEL) if (run / MODEL).is_file() else None,
        "best_epoch": best.get("epoch"),
        "valid_nll": best.get("valid_nll"),
        "test_nll": best.get("test_nll"),
        "valid_loss": best.get("valid_loss"),
        "test_loss": best.get("test_loss"),
        "valid_neg_elbo": best.get("valid_neg_elbo"),
        "test_neg_elbo": best.get("test_neg_elbo"),
        "epochs_run": len(history),
        "wall_time_s": round(sum(r["seconds"] for r in history), 1),
        "status": "running" if history else "not started",
    }


def _score_key(history: list[dict[str, Any]]) -> str:
    """The validation number that selects epochs: NLL for music, the negative ELBO for the VRNN,
    the task's loss for tasks."""
    for key in ("valid_loss", "valid_neg_elbo"):
        if history and key in history[0]:
            return key
    return "valid_nll"


def compare_table(runs: list[Path]) -> str:
    """A markdown table, one run a row."""
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("run", "run", str),
        ("data", "data", str),
        ("cell", "cell", str),
        ("H", "hidden_size", str),
        ("layers", "num_layers", str),
        ("params", "num_params", lambda v: f"{v:,}"),
        ("best epoch", "best_epoch", str),
        ("valid NLL", "valid_nll", lambda v: f"{v:.3f}"),
        ("test NLL", "test_nll", lambda v: f"{v:.3f}"),
        ("valid -ELBO (bound)", "valid_neg_elbo", lambda v: f"{v:.3f}"),
        ("test -ELBO (bound)", "test_neg_elbo", lambda v: f"{v:.3f}"),
        ("test IW NLL", "test_iw_nll", lambda v: f"{v:.3f}"),
        ("IW k", "iw_samples", str),
        ("valid loss (task)", "valid_loss", lambda v: f"{v:.4g}"),
        ("test loss (task)", "test_loss", lambda v: f"{v:.4g}"),
        ("epochs", "epochs_run", str),
        ("wall s", "wall_time_s", lambda v: f"{v:.0f}"),
        ("status", "status", str),
    ]
    rows = [run_summary(Path(run)) for run in runs]
    # The NLL columns are for music, the loss columns for tasks: show those some run has.
    optional = {"valid_nll", "test_nll", "valid_loss", "test_loss", "valid_neg_elbo",
                "test_neg_elbo", "test_iw_nll", "iw_samples"}  # fmt: skip
    columns = [
        c for c in columns if c[1] not in optional or any(r.get(c[1]) is not None for r in rows)
    ]
    lines = [
        "| " + " | ".join(c[0] for c in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for row in rows:
        cells = [fmt(row[key]) if row.get(key) is not None else "-" for _, key, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(runs: list[Path], path: Path) -> None:
    """Training and validation NLL per epoch for every run, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    low, high = float("inf"), float("-inf")
    for k, run in enumerate(runs):
        history = read_history(Path(run))
        if not history:
            raise RunDirError(f"{run} has no finished epoch to plot")
        epochs = [r["epoch"] for r in history]
        key = _score_key(history)
        valid = [r[key] for r in history]
        train = [r["train" + key[len("valid") :]] for r in history]
        color = f"C{k % 10}"
        label = Path(run).name
        ax.plot(epochs, valid, color=color, label=f"{label} valid")
        ax.plot(epochs, train, color=color, ls="--", alpha=0.6, label=f"{label} train")
        best = min(range(len(valid)), key=valid.__getitem__)
        ax.plot(epochs[best], valid[best], "o", color=color, ms=5)
        # The first epochs are far above the rest: scale the axis to what follows them.
        settled = max(2, len(history) // 20)
        low = min(low, *valid, *train)
        high = max(high, *valid[settled:], *train[settled:]) if len(history) > settled else high
    if low < high:
        margin = 0.05 * (high - low)
        ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL per frame (nats), or the task's loss")
    ax.set_title("learning curves (dots: best validation epoch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
