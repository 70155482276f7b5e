"""Long-time-lag tasks: generators against their definitions (recomputed here independently),
trivial baselines against their closed forms, heads, chrono initialisation and a short run."""

import json
import math

import pytest
import torch

from rnnlab import Recurrent
from rnnlab.cli import main
from rnnlab.data.tasks import TASKS, TaskData, make_task
from rnnlab.errors import ConfigError
from rnnlab.families.task import evaluate_task
from rnnlab.models.rnn import ModelConfig
from rnnlab.models.task import TaskModel


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def small(name):
    return make_task(name, seq_len={"lags": 12, "order": 0, "order3": 0, "reber": 0}.get(name, 40))


@pytest.mark.parametrize("name", list(TASKS))
def test_generators_are_deterministic_under_a_seed(name):
    task = small(name)
    a, b, c = (task.generate(16, gen(s)) for s in (3, 3, 4))
    for x, y in ((a.x, b.x), (a.target, b.target), (a.lengths, b.lengths)):
        assert torch.equal(x, y)
    assert not torch.equal(a.x, c.x) or not torch.equal(a.target, c.target)
    assert a.x.shape[:2] == (16, int(a.lengths.max())) and a.x.shape[2] == task.input_size
    beyond = torch.arange(a.x.shape[1])[None, :] >= a.lengths[:, None]
    assert a.x[beyond].abs().sum() == 0  # inputs are zero past each length


def test_adding_modern_form():
    T = 30
    data = make_task("adding", seq_len=T).generate(500, gen())
    values, markers = data.x[..., 0], data.x[..., 1]
    assert ((values >= 0) & (values <= 1)).all()
    assert (markers.sum(1) == 2).all() and set(markers.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(data.target, (values * markers).sum(1))
    assert (data.lengths == T).all()
    first_half = markers[:, : T // 2].sum(1)
    assert (first_half == 0).any() and (first_half == 2).any()  # marks anywhere, not one per half


def test_copy_memory():
    T = 25
    data = make_task("copy", seq_len=T).generate(64, gen())
    symbols = data.x.argmax(-1)
    assert data.x.shape[1] == T + 20
    head = symbols[:, :10]
    assert ((head >= 1) & (head <= 8)).all()
    assert (symbols[:, 10 : T + 9] == 0).all() and (symbols[:, T + 9] == 9).all()
    assert (symbols[:, T + 10 :] == 0).all()
    assert (data.target[:, : T + 10] == 0).all() and torch.equal(data.target[:, T + 10 :], head)


def test_delayed_recall():
    task = make_task("recall", seq_len=20, delay=7)
    data = task.generate(32, gen())
    symbols = data.x.argmax(-1)
    assert (data.target[:, :7] == -1).all()
    assert torch.equal(data.target[:, 7:], symbols[:, :13])
    with pytest.raises(ConfigError, match="delay"):
        make_task("recall", seq_len=5, delay=5)


@pytest.mark.parametrize("name", ["hs-adding", "hs-multiplication"])
def test_hochreiter_adding_and_multiplication(name):
    T = 100
    data = make_task(name, seq_len=T).generate(2000, gen())
    low = -1.0 if name == "hs-adding" else 0.0
    for b in range(len(data)):
        n = int(data.lengths[b])
        assert T <= n <= T + T // 10
        values, markers = data.x[b, :n, 0], data.x[b, :n, 1]
        assert ((values >= low) & (values <= 1)).all()
        marked = (markers == 1).nonzero()[:, 0].tolist()
        assert len(marked) == 2 and min(marked) < 10 and max(marked) < T // 2 - 1
        assert markers[n - 1] == -1 and markers[0] == (1 if 0 in marked else -1)
        assert ((markers == 0) | (markers.abs() == 1)).all() and (markers == -1).sum() <= 2
        x1, x2 = (float(values[i]) for i in marked)
        if 0 in marked:  # the rare case: the first pair's value is fixed
            assert x1 == (0.0 if name == "hs-adding" else 1.0)
        expected = 0.5 + (x1 + x2) / 4 if name == "hs-adding" else x1 * x2
        assert math.isclose(float(data.target[b]), expected, rel_tol=1e-6, abs_tol=1e-7)
    firsts = [int((data.x[b, :, 1] == 1).nonzero()[0]) for b in range(len(data))]
    assert set(firsts) >= set(range(10))  # every one of the first ten positions is used


@pytest.mark.parametrize("name,windows", [("order", [(10, 20), (50, 60)]),
                                          ("order3", [(10, 20), (33, 43), (66, 76)])])  # fmt: skip
def test_temporal_order(name, windows):
    data = make_task(name).generate(400, gen())
    symbols = data.x.argmax(-1)
    for b in range(len(data)):
        n = int(data.lengths[b])
        assert 100 <= n <= 110 and symbols[b, 0] == 4 and symbols[b, n - 1] == 5
        relevant = ((symbols[b, :n] == 6) | (symbols[b, :n] == 7)).nonzero()[:, 0].tolist()
        assert len(relevant) == len(windows)
        label = 0
        for t, (lo, hi) in zip(relevant, windows, strict=True):
            assert lo <= t <= hi
            label = 2 * label + int(symbols[b, t] == 7)
        assert int(data.target[b]) == label
        others = [t for t in range(1, n - 1) if t not in relevant]
        assert (symbols[b, others] < 4).all()
    assert set(data.target.tolist()) == set(range(2 ** len(windows)))


def test_noise_free_long_lags():
    T = 12
    data = make_task("lags", seq_len=T).generate(50, gen())
    symbols = data.x.argmax(-1)
    assert (symbols[:, 0] == symbols[:, -1]).all() and set(symbols[:, 0].tolist()) == {0, 1}
    assert (symbols[:, 1:-1] == torch.arange(2, T)).all()
    assert torch.equal(data.target[:, :-1], symbols[:, 1:]) and (data.target[:, -1] == -1).all()


# An embedded Reber grammar written out again, as edges of a graph, to check the generator.
REBER_EDGES = {"s0": {"B": "s1"}, "s1": {"T": "s2", "P": "s3"}, "s2": {"S": "s2", "X": "s4"},
               "s3": {"T": "s3", "V": "s5"}, "s4": {"X": "s3", "S": "s6"},
               "s5": {"P": "s4", "V": "s6"}, "s6": {"E": "end"}}  # fmt: skip


def _embedded_reber_next(string):
    """Walk the embedded grammar; returns the sets of allowed next symbols, or None if the string
    is not in the language."""
    if len(string) < 9 or string[0] != "B" or string[1] not in "TP" or string[-1] != "E":
        return None
    if string[-2] != string[1]:
        return None
    allowed, state = [{"T", "P"}, {"B"}], "s0"
    for symbol in string[2:-2]:
        if symbol not in REBER_EDGES.get(state, {}):
            return None
        state = REBER_EDGES[state][symbol]
        allowed.append(set(REBER_EDGES[state]) if state != "end" else {string[1]})
    return allowed + [{"E"}] if state == "end" else None


def test_embedded_reber_strings_and_targets():
    task = make_task("reber")
    data = task.generate(300, gen())
    letters = "BTSXPVE"
    seen_second = set()
    for b in range(len(data)):
        n = int(data.lengths[b])
        string = "".join(letters[i] for i in data.x[b, :n].argmax(-1).tolist())
        allowed = _embedded_reber_next(string)
        assert allowed is not None, string
        seen_second.add(string[1])
        for t in range(n - 1):
            got = {letters[i] for i in data.target[b, t].nonzero()[:, 0].tolist()}
            assert got == allowed[t] and data.mask[b, t]
        assert not data.mask[b, n - 1]
    assert seen_second == {"T", "P"}
    # The criterion: right when the possible symbols' outputs are above every other output.
    logits = torch.where(data.target > 0, 2.0, -2.0)
    assert task.correct(logits, data).all()
    logits[0, 3] = -logits[0, 3]
    assert not task.correct(logits, data)[0] and task.correct(logits, data)[1:].all()


# --- trivial baselines against their closed forms --------------------------------------------
def test_baselines_of_the_regression_tasks_match_monte_carlo():
    n = 200_000
    adding = make_task("adding", seq_len=10)
    data = adding.generate(n, gen())
    out = torch.ones(n)
    assert math.isclose(float(adding.loss(out, data)), 1 / 6, rel_tol=0.01)
    assert math.isclose(float(adding.correct(out, data).float().mean()), adding.baseline().metric,
                        rel_tol=0.03)  # fmt: skip
    for name, guess in (("hs-adding", 0.5), ("hs-multiplication", 0.25)):
        task = make_task(name, seq_len=22)
        data = task.generate(n, gen())
        out = torch.full((n,), guess)
        base = task.baseline()
        assert math.isclose(float(task.loss(out, data)), base.loss, rel_tol=0.02), name
        rate = float(task.correct(out, data).float().mean())
        assert math.isclose(rate, base.metric, rel_tol=0.03), (name, rate, base.metric)


def test_baselines_of_the_classification_tasks_are_exact():
    T = 30
    copy = make_task("copy", seq_len=T)
    data = copy.generate(8, gen())
    logits = torch.full((8, T + 20, 10), -math.inf)
    logits[:, : T + 10, 0] = 0.0  # certain of the blanks
    logits[:, T + 10 :, 1:9] = 0.0  # uniform over the eight symbols
    assert math.isclose(float(copy.loss(logits, data)), copy.baseline().loss, rel_tol=1e-6)
    recall = make_task("recall", seq_len=T, delay=3)
    data = recall.generate(8, gen())
    assert math.isclose(float(recall.loss(torch.zeros(8, T, 8), data)), math.log(8), rel_tol=1e-6)
    lags = make_task("lags", seq_len=T)
    data = lags.generate(8, gen())
    logits = torch.full((8, T, T), -math.inf)
    logits.scatter_(2, data.target.clamp(min=0)[..., None], 0.0)
    logits[:, -2, :] = -math.inf
    logits[:, -2, :2] = 0.0  # x or y, a coin
    assert math.isclose(float(lags.loss(logits, data)), lags.baseline().loss, rel_tol=1e-6)
    order = make_task("order3")
    assert math.isclose(order.baseline().loss, math.log(8))


def test_chunked_evaluation_adds_up():
    task = make_task("hs-adding", seq_len=30)
    data = task.generate(600, gen())
    model = TaskModel(ModelConfig(cell="lstm", hidden_size=6, dropout=0.0), task)
    whole = task.summarise(task.metrics(model(data.x, data.lengths).detach(), data))
    chunked = evaluate_task(model, task, data)
    assert math.isclose(chunked["loss"], whole["loss"], rel_tol=1e-5)
    assert chunked["wrong"] == whole["wrong"] and chunked["count"] == 600


# --- heads and initialisation ---------------------------------------------------------------
def test_the_last_step_head_reads_each_sequence_at_its_own_end():
    task = make_task("hs-adding", seq_len=40)
    data = task.generate(4, gen())
    model = TaskModel(ModelConfig(cell="gru", hidden_size=5, dropout=0.0), task).eval()
    out = model(data.x, data.lengths)
    for b in range(4):
        n = int(data.lengths[b])
        alone = model(data.x[b : b + 1, :n], data.lengths[b : b + 1])
        torch.testing.assert_close(out[b : b + 1], alone)


@pytest.mark.parametrize("cell", ["lstm", "lstm-v", "lstm-cifg", "lstm-nfg", "gru", "gru-v1"])
def test_chrono_initialisation(cell):
    torch.manual_seed(0)
    layer = Recurrent(cell, 3, 500, chrono=100).layer_cells[0]
    blocks = dict(zip(getattr(layer, "blocks", "run"), layer.bias.detach().view(-1, 500),
                      strict=True))  # fmt: skip
    keep = blocks.get("f", blocks.get("u"))  # the LSTM forget gate, the GRU update gate
    if keep is None:  # input gate only (NFG, CIFG): b_i = -log(u)
        keep = -blocks["i"]
    assert keep.min() >= 0 and keep.max() <= math.log(99) + 1e-6
    assert keep.std() > 0.5  # spread over [0, log 99], not a constant
    if "i" in blocks and "f" in blocks:
        torch.testing.assert_close(blocks["i"], -blocks["f"])
    if hasattr(layer, "bias_hh"):
        assert (layer.bias_hh.view(3, 500)[1] == 0).all()


def test_chrono_is_refused_where_there_is_no_gate():
    with pytest.raises(ConfigError, match="LSTM family and both GRUs"):
        Recurrent("tanh", 3, 4, chrono=50)
    with pytest.raises(ConfigError, match="at least 3"):
        Recurrent("lstm", 3, 4, chrono=2)


# --- training ---------------------------------------------------------------------------------
def test_a_short_run_learns_a_tiny_recall_task(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", "recall", "--seq-len", "12", "--delay", "2", "--cell", "gru",
            "--hidden-size", "32", "--lr", "0.01", "--epochs", "12", "--train-size", "1600",
            "--test-size", "500", "--out", str(run), "--no-progress", "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trivial predictor (uniform guess): loss 2.079" in out
    result = json.loads((run / "result.json").read_text())
    assert result["test_step_accuracy"] > 0.9 and result["test_loss"] < 0.5
    assert result["trivial"]["step_accuracy"] == 1 / 8
    assert result["task"] == {"task": "recall", "seq_len": 12, "kind": "steps", "delay": 2}
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "task" and config["config"]["dropout"] == 0.0
    assert main(["eval", str(run), "--split", "test"]) == 0
    assert "step_accuracy" in capsys.readouterr().out


def test_a_solved_run_stops_and_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", "lags", "--seq-len", "6", "--cell", "lstm", "--hidden-size", "16",
            "--lr", "0.02", "--epochs", "40", "--train-size", "320", "--test-size", "200",
            "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["solved"] and result["stopped"] == "solved" and result["test_wrong"] == 0
    assert result["epochs_run"] < 40
    assert "solved: yes" in capsys.readouterr().out


def test_task_data_slices_cut_to_the_longest():
    data = make_task("hs-adding", seq_len=40).generate(6, gen())
    part = data.slice(2, 4)
    assert isinstance(part, TaskData) and part.x.shape[1] == int(data.lengths[2:4].max())


def test_unknown_task_names_are_listed(capsys):
    assert main(["train", "--data", "adding-problem"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'adding-problem'" in err and "adding" in err and "copy" in err
