"""Views of runs of any family: a markdown comparison table and learning curves.

A run's score (its name, label and unit) comes from its config.json, written by its family, so
runs of different families sit in one table with the unit in each score column's header, and
their curves are drawn in one panel per unit: per-frame, per-token and per-sentence figures never
share a column or an axis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rnnlab.errors import RunDirError
from rnnlab.files import read_json
from rnnlab.train.checkpoint import METRICS, MODEL, RESULT, stored_parameter_count


def read_history(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows (one JSON object per epoch); a garbled line is an error naming it."""
    path = run / METRICS
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        epoch = row.get("epoch") if isinstance(row, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise RunDirError(f"{path}, line {number}: not an epoch's row (an object with an "
                              "integer 'epoch')")  # fmt: skip
        bad = [k for k, v in row.items() if not isinstance(v, (int, float, str, bool, type(None)))]
        if bad:
            raise RunDirError(f"{path}, line {number}: {bad[0]!r} is not a number")
        rows.append(row)
    return rows


def run_score(run: Path) -> dict[str, str]:
    """The score of a run (name, label, unit, direction), from its config.json."""
    from rnnlab.train.rundir import read_run_config

    family, _, _ = read_run_config(run)
    return family.score.to_dict()


def run_summary(run: Path) -> dict[str, Any]:
    """One row of a comparison: from result.json, or from the metrics of a run still going."""
    from rnnlab.train.rundir import read_run_config

    run = Path(run)
    family, cfg, _ = read_run_config(run)
    score = family.score
    base = {"run": str(run), "model": family.name, "data": cfg.data,
            "cell": getattr(cfg, "cell", None), "hidden_size": getattr(cfg, "hidden_size", None),
            "num_layers": getattr(cfg, "num_layers", 1), "score": score.to_dict()}  # fmt: skip
    if (run / RESULT).is_file():
        row: dict[str, Any] = base | read_json(run / RESULT)
        row["model"] = family.name  # old result.json said "rnn" for an RNN-NADE
        row.setdefault("valid_score", row.get(f"valid_{score.name}"))
        row.setdefault("test_score", row.get(f"test_{score.name}"))
        row["status"] = row.get("stopped", "done")
        return row | {"run": str(run), "score": score.to_dict()}
    history = read_history(run)
    key = f"valid_{score.name}"
    scored = [r for r in history if r.get(key) is not None]
    best = (
        (min if score.direction == "minimize" else max)(scored, key=lambda r: r[key])
        if scored
        else {}
    )
    return base | {
        "num_params": stored_parameter_count(run / MODEL) if (run / MODEL).is_file() else None,
        "best_epoch": best.get("epoch"),
        "valid_score": best.get(key),
        "test_score": best.get(f"test_{score.name}"),
        key: best.get(key),
        f"test_{score.name}": best.get(f"test_{score.name}"),
        "epochs_run": len(history),
        "wall_time_s": round(sum(r["seconds"] for r in history), 1),
        "status": "running" if history else "not started",
    }


def _score_header(row: dict[str, Any]) -> str:
    s = row["score"]
    return f"{s['label']} [{s['unit']}]"


def compare_table(runs: list[Path]) -> str:
    """A markdown table, one run a row: a valid and a test column per kind of score (label and
    unit), so that figures of different units never share a column."""
    rows = [run_summary(Path(run)) for run in runs]
    kinds = list(dict.fromkeys(_score_header(r) for r in rows))
    head = ["run", "model", "data", "cell", "H", "layers", "params", "best epoch"]
    for kind in kinds:
        head += [f"valid {kind}", f"test {kind}"]
    # The importance-weighted NLL of latent runs, a column per unit too.
    iw_units = list(dict.fromkeys(r["score"]["unit"] for r in rows
                                  if r.get("test_iw_nll") is not None))  # fmt: skip
    for unit in iw_units:
        head += [f"test IW NLL [{unit}]", "IW k"]
    head += ["epochs", "wall s", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for r in rows:
        cells = [r["run"], r["model"], r["data"], _s(r.get("cell")), _s(r.get("hidden_size")),
                 _s(r.get("num_layers")), _n(r.get("num_params"), ","),
                 _s(r.get("best_epoch"))]  # fmt: skip
        for kind in kinds:
            mine = _score_header(r) == kind
            cells += [_n(r.get("valid_score"), ".4g") if mine else "-",
                      _n(r.get("test_score"), ".4g") if mine else "-"]  # fmt: skip
        for unit in iw_units:
            mine = r["score"]["unit"] == unit and r.get("test_iw_nll") is not None
            cells += [_n(r.get("test_iw_nll"), ".4g"), _s(r.get("iw_samples"))] if mine else [
                "-", "-"]  # fmt: skip
        cells += [_s(r.get("epochs_run")), _n(r.get("wall_time_s"), ".0f"), _s(r.get("status"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _s(value: Any) -> str:
    return "-" if value is None else str(value)


def _n(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def plot_curves(runs: list[Path], path: Path) -> None:
    """Training and validation score per epoch for every run, one panel per kind of score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_kind: dict[str, list[tuple[int, Path, dict[str, str], list[dict[str, Any]]]]] = {}
    for k, run in enumerate(runs):
        history = read_history(Path(run))
        if not history:
            raise RunDirError(f"{run} has no finished epoch to plot")
        score = run_score(Path(run))
        by_kind.setdefault(f"{score['label']} [{score['unit']}]", []).append((k, Path(run), score,
                                                                              history))  # fmt: skip
    fig, axes = plt.subplots(1, len(by_kind), figsize=(8 * len(by_kind), 5), squeeze=False)
    for ax, (kind, entries) in zip(axes[0], by_kind.items(), strict=True):
        low, high = float("inf"), float("-inf")
        for k, run, score, history in entries:
            epochs = [r["epoch"] for r in history]
            valid = [r[f"valid_{score['name']}"] for r in history]
            train = [r[f"train_{score['name']}"] for r in history]
            color, label = f"C{k % 10}", run.name
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
        ax.set_ylabel(kind)
        ax.set_title(f"{kind} (dots: best validation epoch)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
