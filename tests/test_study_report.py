"""The study report on studies built by hand (no training): a Greff-style space over cells, a
space without a cell (another family's score), a study written before trials recorded a score,
and the errors and fallbacks."""

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from rnnlab.errors import RunDirError
from rnnlab.study import runner
from rnnlab.study.report import variant_table, write_report

CELLS = {"type": "categorical", "choices": ["lstm-v", "lstm-nfg", "lstm-cifg"]}
LR = {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
NLL = {"name": "nll", "label": "NLL", "unit": "nats/frame", "direction": "minimize"}
LOSS = {"name": "loss", "label": "loss", "unit": "task loss", "direction": "minimize"}


def _distributions(space):
    """Optuna's distributions for the raw draws, named as ``space.suggest`` names them."""
    out = {}
    for name, spec in space["params"].items():
        kind = spec["type"]
        if kind == "categorical":
            out[name] = CategoricalDistribution(spec["choices"])
        elif kind == "int":
            out[name] = IntDistribution(spec["low"], spec["high"], log=spec.get("log", False))
        elif kind == "float":
            out[name] = FloatDistribution(spec["low"], spec["high"], log=spec.get("log", False))
        else:
            out[f"one_minus_{name}"] = FloatDistribution(spec["low"], spec["high"], log=True)
    return out


def _study(tmp_path, name, space, trials):
    """An SQLite study with rnnlab's settings (as ``runner.create_study`` stores them) and the
    given trials: (state, raw params, value, user attrs)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name=name, storage=runner.open_storage(url))
    settings = {"space": space, "trials": 20, "sampler": "tpe", "pruner": "median", "seed": 0,
                "runs": str(tmp_path)}  # fmt: skip
    study.set_user_attr("rnnlab", settings)
    dists = _distributions(space)
    for state, params, value, attrs in trials:
        trial = optuna.trial.create_trial(
            params=params,
            distributions={k: dists[k] for k in params},
            value=value,
            user_attrs=attrs,
            state=state,
        )
        study.add_trial(trial)
    return url


def _new(valid, test, score=NLL, family="rnn"):
    attrs = {"score": score, "test_score": test, "family": family, "num_params": 1234,
             "epochs_run": 5, "wall_time_s": 12.3, "run": "/runs/trial"}  # fmt: skip
    return TrialState.COMPLETE, valid, attrs


def _table(md, heading):
    """The rows of the first table under a markdown heading, split into cells."""
    section = md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _report(tmp_path, name, url):
    page, md = write_report(name, url, tmp_path / "out")
    assert page == tmp_path / "out" / f"{name}.html" and md == tmp_path / "out" / f"{name}.md"
    assert "data:image/png;base64," in page.read_text()
    return md.read_text()


def test_a_space_over_cells_reports_every_trial_and_greffs_tables(tmp_path):
    space = {"params": {"cell": CELLS, "lr": LR}, "fixed": {"epochs": 5}}
    trials = []
    for k in range(9):
        cell = CELLS["choices"][k % 3]
        state, value, attrs = _new(valid=1.0 + k % 3 + 0.1 * k, test=1.1 + k % 3 + 0.1 * k)
        trials.append((state, {"cell": cell, "lr": 10 ** -(1 + k % 3)}, value, attrs))
    trials += [
        (TrialState.FAIL, {"cell": "lstm-v", "lr": 0.1}, None, {"diverged": "nan loss"}),
        (TrialState.PRUNED, {"cell": "lstm-nfg", "lr": 0.001}, None, {}),
    ]
    md = _report(tmp_path, "greff", _study(tmp_path, "greff", space, trials))

    assert "Family rnn; score: NLL in nats/frame" in md
    assert "9 complete trials of 20 targeted; sampler tpe, pruner median." in md
    assert "Trials by state: 9 complete, 1 pruned, 1 failed, 0 running." in md
    rows = _table(md, "Every trial")
    head = ["trial", "state", "cell", "lr", "valid NLL (nats/frame)", "test NLL (nats/frame)",
            "epochs", "wall s", "model params"]  # fmt: skip
    assert rows[0] == head
    assert [r[0] for r in rows[2:]] == [str(n) for n in range(11)]  # every trial, in order
    assert rows[2] == ["0", "complete", "lstm-v", "0.1", "1", "1.1", "5", "12", "1234"]
    assert rows[11] == ["9", "fail", "lstm-v", "0.1", "-", "-", "-", "-", "-"]
    assert rows[12] == ["10", "pruned", "lstm-nfg", "0.001", "-", "-", "-", "-", "-"]
    assert "## Optimisation history\n\n![history](greff-history.png)" in md
    importance = _table(md, "Importances (fANOVA, on the validation NLL)")
    assert importance[0] == ["parameter", "importance"]
    assert sorted(r[0] for r in importance[2:]) == ["cell", "lr"]
    assert math.isclose(sum(float(r[1]) for r in importance[2:]), 1.0, abs_tol=0.01)
    assert "![marginal-lr](greff-marginal-lr.png)" in md
    variants = _table(md, "Per variant: Welch's t-test against lstm-v, all complete trials")
    assert variants[0][-2:] == ["Welch t vs lstm-v", "p"]
    assert [r[0] for r in variants[2:]] == ["lstm-v", "lstm-nfg", "lstm-cifg"]  # by median
    assert variants[2][1:] == ["3", "1.4", "1.1", "-", "-"]  # the baseline: no test against itself
    assert float(variants[3][4]) > 0 and float(variants[4][4]) > 0  # both worse than lstm-v
    assert "the best half of each variant's trials (by validation NLL)" in md
    page = (tmp_path / "out" / "greff.html").read_text()
    assert page.count("<tr>") == 1 + 11 + 1 + 2 + 2 * (1 + 3)  # the header rows and every row
    assert "<h2>Importances (fANOVA, on the validation NLL)</h2>" in page
    for plot in ("history", "marginal-lr", "variants"):
        assert (tmp_path / "out" / f"greff-{plot}.png").stat().st_size > 1000


def test_a_space_without_a_cell_names_the_familys_score_and_maps_one_minus_log(tmp_path):
    space = {"params": {"lr": LR, "hidden_size": {"type": "int", "low": 4, "high": 64, "log": True},
                        "momentum": {"type": "one_minus_log", "low": 0.01, "high": 1.0}},
             "fixed": {}}  # fmt: skip
    trials = []
    for k in range(5):
        state, value, attrs = _new(valid=0.5 - 0.05 * k, test=0.6 - 0.05 * k, score=LOSS,
                                   family="task")  # fmt: skip
        params = {
            "lr": 10 ** -(1 + k % 3),
            "hidden_size": 4 * (k + 1),
            "one_minus_momentum": 0.1 * (k + 1),
        }
        trials.append((state, params, value, attrs))
    md = _report(tmp_path, "task", _study(tmp_path, "task", space, trials))

    assert "Family task; score: loss in task loss" in md
    assert "Welch" not in md and "Per variant" not in md
    rows = _table(md, "Every trial")
    assert rows[0][2:8] == ["lr", "hidden_size", "momentum", "valid loss (task loss)",
                            "test loss (task loss)", "epochs"]  # fmt: skip
    assert rows[2][2:7] == ["0.1", "4", "0.9", "0.5", "0.6"]  # momentum = 1 - 0.1
    assert "## Importances (fANOVA, on the validation loss)" in md
    importance = _table(md, "Importances (fANOVA, on the validation loss)")
    assert {r[0] for r in importance[2:]} <= {"lr", "hidden_size", "momentum"}
    assert "## Marginals: test loss against each numeric parameter" in md
    for name in ("lr", "hidden_size", "momentum"):
        assert f"![marginal-{name}](task-marginal-{name}.png)" in md


def test_a_study_written_before_scores_reports_as_nll_per_frame(tmp_path):
    space = {"params": {"cell": {"type": "categorical", "choices": ["lstm-v", "lstm-nfg"]},
                        "lr": LR}}  # fmt: skip
    trials = []
    for k in range(4):
        attrs = {"test_nll": 8.0 + k, "valid_nll": 7.5 + k, "num_params": 99, "epochs_run": 2,
                 "wall_time_s": 3.0, "run": f"/runs/trial-{k:04d}"}  # fmt: skip
        params = {"cell": ["lstm-v", "lstm-nfg"][k % 2], "lr": 10 ** -(1 + k % 3)}
        trials.append((TrialState.COMPLETE, params, 7.5 + k, attrs))
    md = _report(tmp_path, "old", _study(tmp_path, "old", space, trials))

    assert "Family rnn; score: NLL in nats/frame" in md
    assert _table(md, "Every trial")[2][4:6] == ["7.5", "8"]
    assert "## Marginals: test NLL against each numeric parameter" in md
    variants = _table(md, "Per variant: Welch's t-test against lstm-v, all complete trials")
    assert variants[0][2] == "median test NLL (nats/frame)"
    assert [r[:2] for r in variants[2:]] == [["lstm-v", "2"], ["lstm-nfg", "2"]]


def test_without_lstm_v_the_first_choice_is_the_baseline(tmp_path):
    space = {"params": {"cell": {"type": "categorical", "choices": ["gru", "lstm-nfg"]}}}
    trials = []
    for k in range(4):
        state, value, attrs = _new(valid=1.0 + k, test=1.0 + k)
        trials.append((state, {"cell": ["gru", "lstm-nfg"][k % 2]}, value, attrs))
    md = _report(tmp_path, "gru", _study(tmp_path, "gru", space, trials))

    heading = "Per variant: Welch's t-test against gru (the first choice: lstm-v is not searched)"
    assert f"## {heading}, all complete trials" in md
    assert _table(md, heading)[0][-2] == "Welch t vs gru"
    assert "None: the space searches no numeric parameter." in md


def test_one_complete_trial_without_a_test_score_says_why_there_are_no_importances(tmp_path):
    space = {"params": {"lr": LR}}
    state, value, attrs = _new(valid=2.0, test=None, score=LOSS, family="task")
    trials = [(state, {"lr": 0.01}, value, attrs),
              (TrialState.RUNNING, {"lr": 0.001}, None, {})]  # fmt: skip
    md = _report(tmp_path, "one", _study(tmp_path, "one", space, trials))

    assert "None: fANOVA needs at least two complete trials." in md
    assert "Trials by state: 1 complete, 0 pruned, 0 failed, 1 running." in md
    assert "## Marginals: valid loss against each numeric parameter" in md  # no test score
    assert _table(md, "Every trial")[2][3:5] == ["2", "-"]


def test_equal_scores_leave_no_variance_for_fanova(tmp_path):
    space = {"params": {"lr": LR}}
    state, value, attrs = _new(valid=1.0, test=1.0)
    trials = [(state, {"lr": lr}, value, attrs) for lr in (0.1, 0.01)]
    md = _report(tmp_path, "flat", _study(tmp_path, "flat", space, trials))
    assert "None: every complete trial has the same validation score." in md


def test_a_study_without_a_complete_trial_is_an_error(tmp_path):
    space = {"params": {"lr": LR}}
    trials = [(TrialState.FAIL, {"lr": 0.1}, None, {}),
              (TrialState.PRUNED, {"lr": 0.01}, None, {})]  # fmt: skip
    url = _study(tmp_path, "none", space, trials)
    with pytest.raises(RunDirError, match="no complete trial"):
        write_report("none", url, tmp_path / "out")


def test_variant_table_compares_each_cell_with_the_baseline():
    rows = [{"cell": c, "valid": v, "test": v + 0.1}
            for c, vs in {"gru": [1.0, 1.1, 1.2], "rnn": [2.0, 2.2, 2.4]}.items()
            for v in vs]  # fmt: skip
    table = variant_table(rows, baseline="gru")
    assert [r["cell"] for r in table] == ["gru", "rnn"]
    assert math.isnan(table[0]["t"]) and table[1]["t"] > 0 and 0 < table[1]["p"] < 0.05
    assert table[1]["n"] == 3 and math.isclose(table[1]["best"], 2.1)
    assert [r["n"] for r in variant_table(rows, keep=0.5, baseline="gru")] == [2, 2]
    assert all(math.isnan(r["t"]) for r in variant_table(rows))  # no lstm-v: nothing to test
