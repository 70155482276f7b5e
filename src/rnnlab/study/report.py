"""A study's report, for any model family: a header (family, score, trials by state), every trial
in a table, the optimisation history, fANOVA importances (Optuna's evaluator, on the validation
score the study minimised), marginal plots of the test score against each numeric parameter and,
where the study searches over the cell, Greff et al.'s (2017) per-variant comparison: Welch's
t-test of each variant's test scores against a baseline cell's.

Written as one self-contained HTML page (plots inlined as PNG) and a markdown summary (plots as PNG
files beside it). Every label names the score the family recorded (``label`` and ``unit``);
studies written before trials recorded a score read as an NLL in nats/frame of the ``rnn`` family.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from rnnlab.errors import RunDirError
from rnnlab.study.runner import load_study

BASELINE = "lstm-v"
NUMERIC = ("int", "float", "one_minus_log")


@dataclass(frozen=True)
class Score:
    """What the study minimised, as the family named it."""

    label: str = "NLL"
    unit: str = "nats/frame"

    def __str__(self) -> str:
        return f"{self.label} ({self.unit})"


@dataclass
class TrialRow:
    """One trial as the report shows it; ``params`` hold the values training saw (mapped)."""

    number: int
    state: str
    params: dict[str, Any]
    valid: float | None
    test: float | None
    epochs: int | None
    wall_s: float | None
    num_params: int | None

    def shown(self, which: str) -> float | None:
        return self.test if which == "test" else self.valid


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]


@dataclass
class Plot:
    key: str  # names the PNG file beside the markdown
    png: bytes


Block = str | Table | Plot  # a paragraph, a table or a plot
Section = tuple[str, list[Block]]


def _params(raw: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """The searched parameters' values; a ``one_minus_log`` draw x is shown as 1 - x."""
    values = {}
    for name, spec in space["params"].items():
        if spec["type"] == "one_minus_log":
            x = raw.get(f"one_minus_{name}")
            values[name] = None if x is None else 1.0 - x
        else:
            values[name] = raw.get(name)
    return values


def _row(trial: FrozenTrial, space: dict[str, Any]) -> TrialRow:
    attrs = trial.user_attrs
    return TrialRow(
        number=trial.number,
        state=trial.state.name.lower(),
        params=_params(trial.params, space),
        valid=trial.value if trial.state == TrialState.COMPLETE else None,
        test=attrs.get("test_score", attrs.get("test_nll")),  # test_nll: older studies
        epochs=attrs.get("epochs_run"),
        wall_s=attrs.get("wall_time_s"),
        num_params=attrs.get("num_params"),
    )


def _score(trial: FrozenTrial) -> tuple[Score, str]:
    """The score and family a complete trial recorded (older studies: NLL per frame, rnn)."""
    score = trial.user_attrs.get("score") or {}
    default = Score()
    label, unit = score.get("label", default.label), score.get("unit", default.unit)
    return Score(label, unit), trial.user_attrs.get("family", "rnn")


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def variant_table(
    rows: list[dict[str, Any]], keep: float = 1.0, baseline: str = BASELINE
) -> list[dict[str, Any]]:
    """Per cell: n, median and best test score, and Welch's t-test of its test scores against
    the baseline cell's (p-value; a positive t means worse than the baseline). ``rows`` hold
    ``cell``, ``valid`` and ``test``. ``keep`` < 1 compares each variant's best trials only (by
    validation score), as Greff et al. compared their best runs, so that the many trials ruined
    by a bad learning rate do not drown the differences."""
    by_cell: dict[str, list[float]] = {}
    for cell in sorted({str(r.get("cell", "?")) for r in rows}):
        trials = sorted((r for r in rows if str(r.get("cell", "?")) == cell),
                        key=lambda r: float(r["valid"]))  # fmt: skip
        kept = trials[: max(2, math.ceil(keep * len(trials)))]
        by_cell[cell] = [float(r["test"]) for r in kept]
    base = by_cell.get(baseline, [])
    table = []
    for cell, values in sorted(by_cell.items(), key=lambda kv: float(np.median(kv[1]))):
        t, p = (math.nan, math.nan)
        if cell != baseline and len(values) > 1 and len(base) > 1:
            res = stats.ttest_ind(values, base, equal_var=False)
            t, p = float(res.statistic), float(res.pvalue)
        table.append({"cell": cell, "n": len(values), "median": float(np.median(values)),
                      "best": float(min(values)), "t": t, "p": p})  # fmt: skip
    return table


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importance of each searched parameter for the validation score (needs two
    complete trials); a ``one_minus_NAME`` draw is reported under NAME."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k.removeprefix("one_minus_"): v for k, v in found.items()}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)  # a bare Figure draws with Agg, no pyplot state
    return buf.getvalue()


def _history_plot(done: list[TrialRow], score: Score) -> bytes:
    """Each complete trial's validation score and the best so far, as Optuna's
    ``plot_optimization_history`` shows them."""
    numbers = [r.number for r in done]
    values = [float(r.valid) for r in done if r.valid is not None]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.scatter(numbers, values, s=14, label="trial")
    ax.plot(numbers, np.minimum.accumulate(values), color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {score}")
    ax.set_title("optimisation history")
    ax.legend()
    return _png(fig)


def _marginal_plot(
    done: list[TrialRow], name: str, spec: dict[str, Any], score: Score, which: str
) -> bytes:
    """The shown score against one parameter, a colour per cell where the cell is searched.
    A ``one_minus_log`` parameter is drawn as its log-uniform draw, 1 - value."""
    flip = spec["type"] == "one_minus_log"
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in done:
        x, y = r.params.get(name), r.shown(which)
        if x is not None and y is not None:
            key = str(r.params.get("cell", ""))
            groups.setdefault(key, []).append((1.0 - x if flip else x, y))
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key, points in sorted(groups.items()):
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=14, label=key or None)
    if flip or spec.get("log"):
        ax.set_xscale("log")
    ax.set_xlabel(f"1 - {name}" if flip else name)
    ax.set_ylabel(f"{which} {score}")
    ax.set_title(f"marginal: {which} {score.label} against {name}")
    if len(groups) > 1:
        ax.legend(fontsize=6)
    return _png(fig)


def _variant_plot(flat: list[dict[str, Any]], which: str, score: Score) -> bytes:
    cells = sorted({r["cell"] for r in flat})
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    ax.boxplot([[r["test"] for r in flat if r["cell"] == c] for c in cells])
    ax.set_xticks(range(1, len(cells) + 1), cells, rotation=30)
    ax.set_ylabel(f"{which} {score}")
    ax.set_title(f"{which} {score.label} per variant (all complete trials)")
    return _png(fig)


def _header(
    settings: dict[str, Any], trials: list[FrozenTrial], family: str, score: Score, which: str
) -> list[Block]:
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    lines: list[Block] = [
        f"Family {family}; score: {score.label} in {score.unit}, minimised on the validation "
        "split.",
        f"{count[TrialState.COMPLETE]} complete trials of {settings['trials']} targeted; "
        f"sampler {settings['sampler']}, pruner {settings['pruner']}.",
        f"Trials by state: {count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} "
        f"pruned, {count[TrialState.FAIL]} failed, {count[TrialState.RUNNING]} running.",
    ]
    if which == "valid":
        lines.append("Some complete trials have no test score: the marginals and per-variant "
                     "tables show validation scores instead.")  # fmt: skip
    return lines


def _trials_section(rows: list[TrialRow], space: dict[str, Any], score: Score) -> Section:
    names = list(space["params"])
    head = ["trial", "state", *names, f"valid {score}", f"test {score}", "epochs", "wall s",
            "model params"]  # fmt: skip
    body = [[str(r.number), r.state, *(_fmt(r.params[n], ".3g") for n in names),
             _fmt(r.valid), _fmt(r.test), _fmt(r.epochs), _fmt(r.wall_s, ".0f"),
             _fmt(r.num_params)] for r in rows]  # fmt: skip
    return "Every trial", [Table(head, body)]


def _importance_section(
    study: optuna.Study, space: dict[str, Any], done: list[TrialRow], score: Score
) -> Section:
    title = f"Importances (fANOVA, on the validation {score.label})"
    if not space["params"]:
        return title, ["None: the space searches no parameter."]
    if len(done) < 2:
        return title, ["None: fANOVA needs at least two complete trials."]
    if len({r.valid for r in done}) < 2:  # fANOVA fails on zero variance
        return title, ["None: every complete trial has the same validation score."]
    found = importances(study)
    if not found:
        return title, ["None: no searched parameter varies across the complete trials."]
    return title, [Table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in found.items()])]


def _marginal_section(
    done: list[TrialRow], space: dict[str, Any], score: Score, which: str
) -> Section:
    blocks: list[Block] = [
        Plot(f"marginal-{name}", _marginal_plot(done, name, spec, score, which))
        for name, spec in space["params"].items()
        if spec["type"] in NUMERIC
    ]
    title = f"Marginals: {which} {score.label} against each numeric parameter"
    return title, blocks or ["None: the space searches no numeric parameter."]


def _variant_sections(
    done: list[TrialRow], choices: list[Any], score: Score, which: str
) -> list[Section]:
    """Greff et al.'s comparison, against lstm-v where it is searched, else the first choice."""
    baseline = BASELINE if BASELINE in choices else str(choices[0])
    note = "" if baseline == BASELINE else f" (the first choice: {BASELINE} is not searched)"
    flat = [{"cell": str(r.params["cell"]), "valid": r.valid, "test": r.shown(which)}
            for r in done if r.params.get("cell") is not None]  # fmt: skip
    head = ["cell", "trials", f"median {which} {score}", f"best {which} {score.label}",
            f"Welch t vs {baseline}", "p"]  # fmt: skip

    def table(keep: float) -> Table:
        return Table(head, [[r["cell"], str(r["n"]), _fmt(r["median"]), _fmt(r["best"]),
                             _fmt(r["t"], ".2f"), _fmt(r["p"], ".2g")]
                            for r in variant_table(flat, keep, baseline)])  # fmt: skip

    by = f"by validation {score.label}"
    return [
        (f"Per variant: Welch's t-test against {baseline}{note}, all complete trials",
         [Plot("variants", _variant_plot(flat, which, score)), table(1.0)]),
        (f"Per variant: Welch's t-test against {baseline}{note}, the best half of each "
         f"variant's trials ({by})", [table(0.5)]),
    ]  # fmt: skip


def _markdown(title: str, header: list[Block], sections: list[Section], stem: str) -> str:
    def block(b: Block) -> list[str]:
        if isinstance(b, Table):
            cells = [[c.replace("|", "\\|") for c in row] for row in [b.head, *b.rows]]
            lines = [f"| {' | '.join(row)} |" for row in cells]
            return [lines[0], "|" + " --- |" * len(b.head), *lines[1:], ""]
        if isinstance(b, Plot):
            return [f"![{b.key}]({stem}-{b.key}.png)", ""]
        return [b, ""]

    lines = [f"# {title}", ""]
    for b in header:
        lines += block(b)
    for heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for b in blocks:
            lines += block(b)
    return "\n".join(lines)


def _html(title: str, header: list[Block], sections: list[Section]) -> str:
    def block(b: Block) -> str:
        if isinstance(b, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in b.head)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                           for row in b.rows)  # fmt: skip
            return f"<table><tr>{head}</tr>{rows}</table>"
        if isinstance(b, Plot):
            data = base64.b64encode(b.png).decode()
            return f"<img alt='{b.key}' src='data:image/png;base64,{data}'>"
        return f"<p>{html.escape(b)}</p>"

    body = "".join(block(b) for b in header)
    for heading, blocks in sections:
        body += f"<h2>{html.escape(heading)}</h2>" + "".join(block(b) for b in blocks)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ccc}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def write_report(name: str, storage: str, out: Path) -> tuple[Path, Path]:
    """Write ``out/NAME.html``, ``out/NAME.md`` and its plots ``out/NAME-*.png``; returns the
    page's and the markdown's paths."""
    study, settings = load_study(name, storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise RunDirError(f"study {name!r} has no complete trial to report yet")
    space = settings["space"]
    score, family = _score(complete[0])
    rows = [_row(t, space) for t in trials]
    done = [r for r in rows if r.state == "complete"]
    which = "test" if all(r.test is not None for r in done) else "valid"
    sections: list[Section] = [
        _trials_section(rows, space, score),
        ("Optimisation history", [Plot("history", _history_plot(done, score))]),
        _importance_section(study, space, done, score),
        _marginal_section(done, space, score, which),
    ]
    cell = space["params"].get("cell", {})
    if cell.get("type") == "categorical":
        sections += _variant_sections(done, cell["choices"], score, which)
    out.mkdir(parents=True, exist_ok=True)
    header = _header(settings, trials, family, score, which)
    for _, blocks in sections:
        for plot in (b for b in blocks if isinstance(b, Plot)):
            (out / f"{name}-{plot.key}.png").write_bytes(plot.png)
    md = out / f"{name}.md"
    md.write_text(_markdown(f"Study {name}", header, sections, name))
    page = out / f"{name}.html"
    page.write_text(_html(f"Study {name}", header, sections))
    return page, md
