"""A study's report: per-variant distributions of the test NLL with Welch's t-test against the
vanilla ``lstm-v`` (as Greff et al. 2017 compared variants), hyperparameter importance by fANOVA
(Optuna's evaluator, on the validation NLL the study minimised), and marginal plots of the NLL
against the learning rate and the hidden size. Written as one self-contained HTML page (plots
inlined as PNG) and a markdown summary.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy import stats

from rnnlab.errors import RunDirError
from rnnlab.study.runner import load_study

BASELINE = "lstm-v"


def _trials(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state != TrialState.COMPLETE or t.user_attrs.get("test_nll") is None:
            continue
        rows.append({"number": t.number, "valid": t.value, "test": t.user_attrs["test_nll"],
                     **t.params})  # fmt: skip
    return rows


def variant_table(rows: list[dict[str, Any]], keep: float = 1.0) -> list[dict[str, Any]]:
    """Per cell: n, median and best test NLL, and Welch's t-test of its test NLLs against
    lstm-v's (p-value; a positive t means worse than vanilla). ``keep`` < 1 compares each
    variant's best trials only (by validation NLL), as Greff et al. compared their best runs,
    so that the many trials ruined by a bad learning rate do not drown the differences."""
    by_cell: dict[str, list[float]] = {}
    for cell in sorted({str(r.get("cell", "?")) for r in rows}):
        trials = sorted((r for r in rows if str(r.get("cell", "?")) == cell),
                        key=lambda r: float(r["valid"]))  # fmt: skip
        kept = trials[: max(2, math.ceil(keep * len(trials)))]
        by_cell[cell] = [float(r["test"]) for r in kept]
    base = by_cell.get(BASELINE, [])
    table = []
    for cell, values in sorted(by_cell.items(), key=lambda kv: float(np.median(kv[1]))):
        t, p = (math.nan, math.nan)
        if cell != BASELINE and len(values) > 1 and len(base) > 1:
            res = stats.ttest_ind(values, base, equal_var=False)
            t, p = float(res.statistic), float(res.pvalue)
        table.append({"cell": cell, "n": len(values), "median": float(np.median(values)),
                      "best": float(min(values)), "t": t, "p": p})  # fmt: skip
    return table


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importance of each parameter for the validation NLL (needs two complete trials)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(rows: list[dict[str, Any]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    cells = sorted({str(r.get("cell")) for r in rows})
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.boxplot([[r["test"] for r in rows if str(r.get("cell")) == c] for c in cells])
    ax.set_xticks(range(1, len(cells) + 1), cells, rotation=30)
    ax.set_ylabel("test NLL per frame")
    ax.set_title("test NLL per variant (all complete trials)")
    fig.tight_layout()
    plots["variants"] = _png(fig)
    plt.close(fig)
    for param, log_x in (("lr", True), ("hidden_size", True)):
        if not any(param in r for r in rows):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in cells:
            pts = [(r[param], r["test"]) for r in rows if str(r.get("cell")) == c and param in r]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, s=14, label=c)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel("test NLL per frame")
        ax.set_title(f"marginal: test NLL against {param}")
        ax.legend(fontsize=6)
        fig.tight_layout()
        plots[param] = _png(fig)
        plt.close(fig)
    return plots


def write_report(name: str, storage: str, out: Path) -> tuple[Path, Path]:
    """Write ``out/NAME.html`` and ``out/NAME.md``; returns their paths."""
    study, settings = load_study(name, storage)
    rows = _trials(study)
    if not rows:
        raise RunDirError(f"study {name!r} has no complete trial to report yet")
    table = variant_table(rows)
    best_half = variant_table(rows, keep=0.5)
    imp = importances(study)
    plots = _plots(rows)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Study {name}", "",
             f"{len(rows)} complete trials of {settings['trials']} targeted; sampler "
             f"{settings['sampler']}, pruner {settings['pruner']}.", "",
             "| cell | trials | median test NLL | best test NLL | Welch t vs lstm-v | p |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in table:
        lines.append(f"| {r['cell']} | {r['n']} | {r['median']:.3f} | {r['best']:.3f} | "
                     f"{_num(r['t'])} | {_num(r['p'], '.2g')} |")  # fmt: skip
    lines += ["", "The best half of each variant's trials (by validation NLL):", "",
              "| cell | trials | median test NLL | best test NLL | Welch t vs lstm-v | p |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in best_half:
        lines.append(f"| {r['cell']} | {r['n']} | {r['median']:.3f} | {r['best']:.3f} | "
                     f"{_num(r['t'])} | {_num(r['p'], '.2g')} |")  # fmt: skip
    lines += ["", "fANOVA importance (validation NLL):", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in imp.items()] or ["- (too few trials)"]
    md = out / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    body = "".join(f"<h2>{html.escape(k)}</h2><img src='data:image/png;base64,{v}'>"
                   for k, v in plots.items())  # fmt: skip

    def rows_html(entries: list[dict[str, Any]]) -> str:
        return "".join(
            f"<tr><td>{html.escape(r['cell'])}</td><td>{r['n']}</td><td>{r['median']:.3f}</td>"
            f"<td>{r['best']:.3f}</td><td>{_num(r['t'])}</td><td>{_num(r['p'], '.2g')}</td></tr>"
            for r in entries
        )

    head = ("<tr><th>cell</th><th>trials</th><th>median test NLL</th><th>best</th>"
            "<th>Welch t vs lstm-v</th><th>p</th></tr>")  # fmt: skip
    imp_html = "".join(f"<li>{html.escape(k)}: {v:.3f}</li>" for k, v in imp.items())
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:.2em .6em;border-bottom:1px solid #ccc}</style></head><body>"
        f"<h1>Study {html.escape(name)}</h1><p>{len(rows)} complete trials.</p>"
        f"<h2>All trials</h2><table>{head}{rows_html(table)}</table>"
        "<h2>The best half of each variant's trials (by validation NLL)</h2>"
        f"<table>{head}{rows_html(best_half)}</table>"
        f"<h2>fANOVA importance</h2><ul>{imp_html}</ul>{body}</body></html>"
    )
    page_path = out / f"{name}.html"
    page_path.write_text(page)
    return page_path, md


def _num(value: float, spec: str = ".2f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)
