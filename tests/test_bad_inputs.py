"""Bad input, tried as a new user would: every case ends in one clear line on stderr and exit
status 2, never a traceback, never silently accepted. Each case writes what it needs under a
fresh directory and names the words its message must hold."""

import json
import pickle
import shutil

import numpy as np
import pytest

from rnnlab.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run (music, one epoch) that the run-directory cases copy and damage."""
    from rnnlab.data.polyphonic import PianoRolls, save_npz

    root = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    pieces = {s: [rng.random((6, 88)) < 0.1 for _ in range(3)] for s in ("train", "valid", "test")}
    save_npz(PianoRolls("t", "test", pieces), root / "t.npz")
    run = root / "run"
    assert main(["train", "--data", str(root / "t.npz"), "--epochs", "1", "--hidden-size", "4",
                 "--out", str(run), "--no-progress"]) == 0  # fmt: skip
    return run


def _rolls(path, **override):
    arrays = {"packed": np.array(1, np.uint8)}
    for split in ("train", "valid", "test"):
        arrays[f"{split}_rolls"] = np.packbits(np.zeros((6, 88), np.uint8), axis=1)
        arrays[f"{split}_lengths"] = np.array([3, 3])
    np.savez(path, **(arrays | override))
    return str(path)


def _run_copy(trained, tmp, change):
    run = tmp / "run"
    shutil.copytree(trained, run)
    change(run)
    return str(run)


def _config(run, **fields):
    path = run / "config.json"
    document = json.loads(path.read_text())
    document["config"].update(fields)
    path.write_text(json.dumps(document))


def _csv(path, text):
    path.write_text(text)
    return str(path)


def _task(*extra):
    return ["train", "--model", "task", "--data", "adding", "--seq-len", "5", *extra]


CASES = {
    "a cell argument out of range": (
        lambda t, _: _task("--cell", "egru", "--cell-args", "thr_mean=2", "--out", str(t / "r")),
        "egru's thr_mean must lie in (0, 1)"),
    "a cell argument the cell does not have": (
        lambda t, _: _task("--cell", "egru", "--cell-args", "thr_men=0.2", "--out", str(t / "r")),
        "has no argument 'thr_men' (did you mean 'thr_mean'?)"),
    "NaN as a cell argument": (
        lambda t, _: _task("--cell", "nc-gru", "--cell-args", "refresh=nan", "--out", str(t / "r")),
        "must be int, got 'nan'"),
    "cell arguments for a cell without any": (
        lambda t, _: _task("--cell", "gru", "--cell-args", "a=1", "--out", str(t / "r")),
        "takes no cell arguments"),
    "a layer option the cell does not take": (
        lambda t, _: _task("--cell", "gatel0rd", "--zoneout", "0.1", "--out", str(t / "r")),
        "it does not take zoneout"),
    "negative length in an npz": (
        lambda t, _: ["train", "--data", _rolls(t / "x.npz", train_lengths=np.array([7, -1]))],
        "every piece has at least one frame"),
    "packed npz of another width": (
        lambda t, _: ["train", "--data", _rolls(t / "x.npz", train_rolls=np.zeros((6, 8),
                                                                                  np.uint8))],
        "packed rows of 88 keys are 11 bytes"),
    "fractional note in a pickle": (
        lambda t, _: ["train", "--data", _pickle(t / "x.pickle", 60.5)], "whole numbers"),
    "a billion units in config.json": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: _config(run, hidden_size=10**9))],
        "hidden_size must be at most 65,536"),
    "200,000 layers in config.json": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: _config(run, num_layers=200_000))],
        "num_layers must be at most 64"),
    "a string where a size belongs": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: _config(run, hidden_size="4"))],
        "hidden_size must be int"),
    "config.json that is not JSON": (
        lambda t, r: ["compare", _run_copy(r, t, lambda run: (run / "config.json")
                                           .write_text("{"))],
        "is not valid JSON"),
    "a family nobody registered": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: (run / "config.json").write_text(
            json.dumps({"format": 2, "family": "rbm", "score": {}, "config": {}})))],
        "unknown model 'rbm'"),
    "assets.json gone": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: (run / "assets.json").unlink())],
        "has no assets.json"),
    "assets.json without what the model needs": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: (run / "assets.json").write_text(
            json.dumps({"data": {"frame_size": "many"}})))],
        "assets.json lacks or garbles what the rnn model needs"),
    "assets.json that is a list": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: (run / "assets.json").write_text("[]"))],
        "assets.json: not a JSON object"),
    "weights of another shape": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: _config(run, hidden_size=5))],
        "does not match the model"),
    "--data-dir without the corpus": (
        lambda t, _: ["train", "--data", "ptb", "--data-dir", str(t)], "lacks ptb.train.txt"),
    "sample --bpm 0": (
        lambda t, r: ["sample", str(r), "--out", str(t / "x.mid"), "--bpm", "0"],
        "--bpm must be in [4, 1000]"),
    "sample into a folder that does not exist": (
        lambda t, r: ["sample", str(r), "--out", str(t / "no" / "x.mid")], "does not exist"),
    "generate from a music run": (
        lambda t, r: ["generate", str(r)], "draws frames: rnnlab sample"),
    "a negative thread count": (lambda t, _: ["train", "--threads", "-1"], "at least 0"),
    "an epoch count of 0": (lambda t, _: ["train", "--epochs", "0"], "epochs must be positive"),
    "a learning rate that overflows to inf": (
        lambda t, _: ["train", "--lr", "1e400"], "not a finite number"),
    "a fractional hidden size": (
        lambda t, _: ["train", "--hidden-size", "8.5"], "invalid int value: '8.5'"),
    "a CSV with a missing value": (
        lambda t, _: ["train", "--data", _csv(t / "s.csv", "a,b\n1,2\n3,\n5,6\n")],
        "line 3"),
    "a CSV of one row": (
        lambda t, _: ["train", "--data", _csv(t / "s.csv", "a\n1\n")], "s.csv"),
    "an id column that is not there": (
        lambda t, _: ["train", "--data", _csv(t / "s.csv", "a\n1\n2\n"), "--id-column", "who"],
        "no id column 'who'"),
    "a horizon longer than the test part": (
        lambda t, _: ["train", "--data", _csv(t / "s.csv", "a\n" + "1\n2\n" * 20),
                      "--horizon", "50"], "--horizon 50 is longer than the shortest test part"),
    "a season longer than the history": (
        lambda t, _: ["train", "--data", _csv(t / "s.csv", "a\n" + "1\n2\n" * 20),
                      "--season", "500"], "--season 500 is longer than the history"),
    "a series run evaluated on data of another width": (
        lambda t, _: ["eval", _series_run(t), "--data",
                      _csv(t / "two.csv", "a,b\n" + "1,2\n" * 40)],
        "has 2 value column(s); the model was trained on 1"),
    "upgrading a current run": (
        lambda t, r: ["upgrade", _run_copy(r, t, lambda run: None)], "already in the current"),
    "changing the learning rate on resume": (
        lambda t, r: ["train", "--out", _run_copy(r, t, lambda run: None), "--resume", "--lr",
                      "0.1"], "only --epochs, --device and --threads may change"),
    "a study of zero trials": (
        lambda t, _: ["study", "create", "s", "--trials", "0", "--dir", str(t)],
        "--trials must be positive"),
    "a search space that searches the model": (
        lambda t, _: ["study", "create", "s", "--trials", "2", "--dir", str(t), "--space",
                      _json(t / "space.json", {"params": {"model": {"type": "categorical",
                                                                    "choices": ["rnn"]}}})],
        "fix 'model', do not search it"),
    "a fixed study value the family refuses": (
        lambda t, _: ["study", "create", "s", "--trials", "2", "--dir", str(t), "--space",
                      _json(t / "space.json", {"params": {"lr": {"type": "float", "low": 0.1,
                                                                 "high": 1.0}},
                                               "fixed": {"dropout": 1.5}})],
        "dropout must be below 1.0"),
    # The second round (issue 16's closing check): found by a fresh hunt, each a traceback before.
    "NaN note in a pickle": (
        lambda t, _: ["data", "show", _pickle(t / "x.pickle", float("nan"))], "whole numbers"),
    "a frame that is a number in a pickle": (
        lambda t, _: ["data", "show", _raw_pickle(t / "x.pickle", [60])],
        "must be a list of MIDI notes"),
    "a packed flag that is an array": (
        lambda t, _: ["data", "show", _rolls(t / "x.npz", packed=np.array([1, 1, 1], np.uint8))],
        "'packed' must be a single integer"),
    "an empty .npy series": (
        lambda t, _: ["data", "show", _npy(t / "e.npy", np.zeros((0, 1)))], "is empty"),
    "metrics.jsonl of garbage": (
        lambda t, r: ["compare", _run_copy(r, t, lambda run: _without_result(run, "{oops\n"))],
        "not valid JSON"),
    "metrics.jsonl rows that are lists": (
        lambda t, r: ["compare", _run_copy(r, t, lambda run: _without_result(run, "[1, 2]\n"))],
        "not an epoch's row"),
    "a checkpoint of another size, resumed": (
        lambda t, r: ["train", "--out", _run_copy(r, t, _other_checkpoint), "--resume",
                      "--epochs", "3", "--no-progress"],
        "holds another model"),
    "a plot with no picture format": (
        lambda t, r: ["compare", str(r), "--plot", str(t / "curves.txt")], "a picture ends in"),
    "a huge importance-sample count": (
        lambda t, r: ["eval", str(r), "--iw-samples", "1000000000"], "up to 100,000"),
    "a seed beyond every generator": (
        lambda t, r: ["sample", str(r), "--out", str(t / "x.mid"), "--seed", str(10**23)],
        "--seed must be in"),
    "a tempo MIDI cannot write": (
        lambda t, r: ["sample", str(r), "--out", str(t / "x.mid"), "--bpm", "1e-300"],
        "--bpm must be in"),
    "a train seed beyond every generator": (
        lambda t, r: ["train", "--data", "jsb", "--seed", str(10**23)], "seed must be at most"),
    "an output folder that is a file": (
        lambda t, r: ["data", "import-midi", _midi_folder(t), "--name", "x", "--out-dir",
                      _csv(t / "f.csv", "a\n1\n")], "File exists"),
    "a study folder that is a file": (
        lambda t, _: ["study", "create", "s", "--trials", "2", "--dir", _csv(t / "f", "x"),
                      "--space", "greff"], "is a file, not a folder"),
    "a storage URL no driver reads": (
        lambda t, _: ["study", "create", "s", "--trials", "2", "--storage", "bogus://x",
                      "--space", "greff"], "cannot open it"),
    "a negative worker": (
        lambda t, _: ["study", "run", "s", "--dir", str(t), "--worker", "-5"],
        "--worker must be in"),
    "a space whose fixed values are a list": (
        lambda t, _: ["study", "create", "s", "--trials", "2", "--dir", str(t), "--space",
                      _json(t / "space.json", {"params": {}, "fixed": [1]})], "are JSON objects"),
    "a momentum of 2": (
        lambda t, _: ["train", "--data", "jsb", "--optimizer", "sgd", "--momentum", "2"],
        "momentum must be below 1.0"),
    "a log range from zero": (
        lambda t, _: ["study", "create", "s", "--trials", "2", "--dir", str(t), "--space",
                      _json(t / "space.json", {"params": {"momentum": {
                          "type": "one_minus_log", "low": 0.0, "high": 0.5}},
                          "fixed": {"optimizer": "sgd"}})], "needs low > 0"),
    # The third round: bench speed's options, each a traceback (or a silent zero) before.
    "a bench shape with a zero": (
        lambda t, _: _bench(t, "--shapes", "0,1,2,3"), "B must be in [1, 4,096], got 0"),
    "a bench shape of text": (
        lambda t, _: _bench(t, "--shapes", "a,b,c,d"), "comma-separated whole numbers"),
    "a bench shape of three values": (
        lambda t, _: _bench(t, "--shapes", "1,2,3"), "four values B,T,I,H per shape"),
    "a negative bench shape": (
        lambda t, _: _bench(t, "--shapes", "2,3,4,-5"), "H must be in [1, 16,384], got -5"),
    "a huge bench shape": (
        lambda t, _: _bench(t, "--shapes", "4096,100000,88,256"), "T x B x max(I, H)"),
    "a bench of no repeats": (
        lambda t, _: _bench(t, "--repeats", "0"), "argument --repeats: must be in [1, 1,000]"),
    "a negative sweep length": (
        lambda t, _: _bench(t, "--sweep-t", "-1"), "argument --sweep-t: each length must be in"),
    "a bench written into a folder": (
        lambda t, _: ["bench", "speed", "--cells", "tanh", "--out", str(t)], "is a folder"),
    "resuming a run that never finished an epoch": (
        lambda t, r: ["train", "--out", _run_copy(r, t, _unfinished), "--resume"],
        "no epoch finished, so there is nothing to resume"),
    "the status of a study that is not there": (
        lambda t, _: ["study", "status", "nope", "--dir", _study(t)],
        "no study 'nope' in"),
    "a worker for a study that is not there": (
        lambda t, _: ["study", "run", "nope", "--dir", _study(t)], "studies there: s"),
    "a report of a study in a folder that is not there": (
        lambda t, _: ["study", "report", "s", "--dir", str(t / "elsewhere")],
        "there is no such folder"),
    "model.safetensors that is a folder": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: _replace_model(run, "dir"))],
        "model.safetensors is a directory, not a safetensors file"),
    "model.safetensors that is /dev/zero": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: _replace_model(run, "/dev/zero"))],
        "model.safetensors is not a regular file"),
    "model.safetensors gone from a trained run": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: _replace_model(run, None))],
        "model.safetensors is missing (the best epoch's weights"),
    "config.json whose config is a list": (
        lambda t, r: ["eval", _run_copy(r, t, lambda run: _document(run, config=[1]))],
        "'config' must be a JSON object of options, got list"),
    "a text file named .npz": (
        lambda t, _: ["train", "--data", _csv(t / "x.npz", "a,b\n1,2\n")],
        "x.npz: not a plain array file"),
    "a text file named .npy": (
        lambda t, _: ["data", "show", _csv(t / "x.npy", "1 2 3\n")], "not a plain array file"),
    "a folder named .npz": (
        lambda t, _: ["train", "--data", _folder(t / "x.npz")], "x.npz is a directory"),
    "a folder named .csv": (
        lambda t, _: ["train", "--data", _folder(t / "x.csv")], "x.csv is a directory"),
    "huge values in a series CSV": (
        lambda t, _: ["train", "--data", _csv(t / "s.csv", "a\n" + "1e300\n-1e300\n" * 20)],
        "s.csv line 2, column 'a': '1e300' is beyond"),
    "a --data-dir that is a file": (
        lambda t, _: ["train", "--data", "ptb", "--data-dir", _csv(t / "f.txt", "x")],
        "--data-dir"),
    "a --space file that is not there": (
        lambda t, _: ["study", "create", "s", "--trials", "2", "--dir", str(t), "--space",
                      str(t / "nowhere.json")], "nowhere.json: no such file"),
    "a space that searches nothing": (
        lambda t, _: _create(t, {"params": {}}), "'params' is empty"),
    "a categorical choice the family refuses": (
        lambda t, _: _create(t, {"params": {"cell": {"type": "categorical",
                                                     "choices": ["lstm", "lsmt"]}}}),
        "parameter 'cell': the value 'lsmt' is refused: unknown cell"),
    "a range whose high end the family refuses": (
        lambda t, _: _create(t, {"params": {"dropout": {"type": "float", "low": 0.1,
                                                        "high": 1.5}}}),
        "the value 1.5 is refused: dropout must be below 1.0"),
    "a range upside down": (
        lambda t, _: _create(t, {"params": {"dropout": {"type": "float", "low": 0.5,
                                                        "high": 0.1}}}),
        "needs low < high, got 0.5 and 0.1"),
    "a range with a text bound": (
        lambda t, _: _create(t, {"params": {"lr": {"type": "float", "low": 0.001,
                                                   "high": "0.1"}}}),
        "high must be a number, got '0.1'"),
    "an empty study name": (
        lambda t, _: ["study", "create", "", "--trials", "1", "--dir", str(t)],
        "a study's name is a plain folder name"),
    "a study name with a slash": (
        lambda t, _: ["study", "status", "a/b", "--dir", str(t)], "(no '/'), got 'a/b'"),
    "sample into a folder": (
        lambda t, r: ["sample", str(r), "--out", _folder(t / "x.mid")], "is a folder"),
    "sample to a name without an extension": (
        lambda t, r: ["sample", str(r), "--out", str(t / "song")], "ends in .mid or .midi"),
    "sample to a link to /dev/full": (
        lambda t, r: ["sample", str(r), "--out", _link(t / "x.mid", "/dev/full")],
        "is not a regular file"),
    "a piano roll into a pipe": (
        lambda t, r: ["sample", str(r), "--png", _fifo(t / "x.png")], "is not a regular file"),
    "a piano roll with no picture format": (
        lambda t, r: ["sample", str(r), "--png", str(t / "roll")], "a picture ends in"),
}  # fmt: skip


def _link(path, target):
    path.symlink_to(target)
    return str(path)


def _fifo(path):
    import os

    os.mkfifo(path)
    return str(path)


def _create(tmp, space):
    return ["study", "create", "s", "--trials", "2", "--dir", str(tmp), "--space",
            _json(tmp / "space.json", space)]  # fmt: skip


def _replace_model(run, what):
    """model.safetensors replaced by a folder, a link to a device, or nothing."""
    model = run / "model.safetensors"
    model.unlink()
    if what == "dir":
        model.mkdir()
    elif what is not None:
        model.symlink_to(what)


def _document(run, **fields):
    path = run / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


def _folder(path):
    path.mkdir()
    return str(path)


def _study(tmp):
    """A folder holding one study, s."""
    assert main(["study", "create", "s", "--trials", "1", "--dir", str(tmp)]) == 0
    return str(tmp)


def _unfinished(run):
    """A run directory as a run killed in its first epoch leaves it: no checkpoint yet."""
    for name in ("checkpoint.safetensors", "model.safetensors", "metrics.jsonl", "result.json"):
        (run / name).unlink()


def _bench(tmp, *options):
    return ["bench", "speed", "--cells", "tanh", "--no-memory", "--out", str(tmp / "s.json"),
            *options]  # fmt: skip


def _raw_pickle(path, piece):
    with open(path, "wb") as f:
        pickle.dump({s: [piece] for s in ("train", "valid", "test")}, f)
    return str(path)


def _midi_folder(tmp):
    """A folder of ten short MIDI files, enough for the three splits."""
    from rnnlab.data.midi import write_midi

    folder = tmp / "midi"
    folder.mkdir()
    for k in range(10):
        roll = np.zeros((16, 88), bool)
        roll[np.arange(16), 30 + (np.arange(16) + k) % 12] = True
        write_midi(roll, folder / f"p{k}.mid", 2, 100.0)
    return str(folder)


def _npy(path, array):
    np.save(path, array)
    return str(path)


def _without_result(run, metrics):
    (run / "result.json").unlink()
    (run / "metrics.jsonl").write_text(metrics)


def _other_checkpoint(run):
    """The checkpoint of a wider model of the same family in place of the run's own."""
    other = run.parent / "wider"
    data = json.loads((run / "config.json").read_text())["config"]["data"]
    assert main(["train", "--data", data, "--epochs", "1", "--hidden-size", "6", "--out",
                 str(other), "--no-progress"]) == 0  # fmt: skip
    shutil.copy(other / "checkpoint.safetensors", run / "checkpoint.safetensors")


def _series_run(tmp):
    data = _csv(tmp / "one.csv", "a\n" + "".join(f"{k % 5}\n" for k in range(60)))
    assert main(["train", "--data", data, "--epochs", "1", "--hidden-size", "4", "--out",
                 str(tmp / "srun"), "--no-progress"]) == 0  # fmt: skip
    return str(tmp / "srun")


def _pickle(path, note):
    with open(path, "wb") as f:
        pickle.dump({s: [[[note]]] for s in ("train", "valid", "test")}, f)
    return str(path)


def _json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_clear_line(case, trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no cached corpus, no download
    argv, words = CASES[case]
    code = main(argv(tmp_path, trained))
    err = capsys.readouterr().err
    assert code == 2, err
    assert words in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_evaluating_a_text_run_never_downloads(tmp_path, monkeypatch, capsys):
    """A run naming ptb, evaluated where the corpus is not: an error, not a download."""
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("eval tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RNNLAB_DATA", raising=False)
    corpus = tmp_path / "ptbdir"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"ptb.{split}.txt").write_text("a b c\nb c a\n" * 10)
    run = tmp_path / "run"
    assert main(["train", "--data", "ptb", "--data-dir", str(corpus), "--epochs", "1",
                 "--hidden-size", "4", "--num-layers", "1", "--batch-size", "2", "--out", str(run),
                 "--no-progress"]) == 0  # fmt: skip
    document = json.loads((run / "config.json").read_text())
    document["config"]["data_dir"] = ""  # as if trained from the cache, now gone
    (run / "config.json").write_text(json.dumps(document))
    assert main(["eval", str(run)]) == 2
    assert "no corpus 'ptb'" in capsys.readouterr().err
    assert main(["generate", str(run), "--n", "1"]) == 0  # the model itself needs no corpus


def test_an_unreadable_checkpoint_says_so(trained, tmp_path, capsys, monkeypatch):
    """safetensors calls a file it may not read "No such file"; rnnlab names the real reason
    (the test runs as root, so the refusal is simulated)."""
    import rnnlab.train.checkpoint as checkpoint

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint, "open", refused, raising=False)
    assert main(["eval", str(trained)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors cannot be read (Permission denied)" in err, err


def test_iw_samples_without_a_latent_are_refused_before_evaluating(trained, capsys):
    assert main(["eval", str(trained), "--iw-samples", "3"]) == 2
    out, err = capsys.readouterr()
    assert "--iw-samples applies to models with latent variables" in err and out == "", out


def _recurrent(*args, **kwargs):
    from rnnlab import Recurrent

    return lambda: Recurrent(*args, **kwargs)


def _forward(x, state=None):
    import torch

    from rnnlab import Recurrent

    layer = Recurrent("lstm", 3, 4)
    return lambda: layer(x(torch) if callable(x) else x, state=state(torch) if state else None)


API_CASES = {
    "no cell name": (_recurrent(None, 3, 4), TypeError, "cell must be a name"),
    "a cell that is a number": (_recurrent(3, 3, 4), TypeError, "cell must be a name"),
    "an absurd hidden size": (_recurrent("lstm", 3, 2**21), ValueError,
                              "hidden_size must be at most 1,048,576"),
    "a million layers": (_recurrent("gru", 3, 4, 10**6), ValueError, "num_layers must be at most"),
    "dropout as a string": (_recurrent("gru", 3, 4, 2, dropout="0.5"), TypeError,
                            "dropout must be a number"),
    "a NaN forget bias": (_recurrent("lstm", 3, 4, forget_bias=float("nan")), ValueError,
                          "forget_bias must be a finite number"),
    "bidirectional as a string": (_recurrent("lstm", 3, 4, bidirectional="yes"), TypeError,
                                  "bidirectional must be True or False"),
    "a numpy input": (_forward(np.zeros((2, 1, 3), np.float32)), TypeError,
                      "input x must be a torch.Tensor, got ndarray (torch.from_numpy"),
    "an int64 input": (_forward(lambda torch: torch.zeros(2, 1, 3, dtype=torch.int64)),
                       TypeError, "must be a floating-point tensor, got torch.int64"),
    "a state of integers": (_forward(lambda torch: torch.zeros(2, 1, 3),
                                     lambda torch: (torch.zeros(1, 1, 4, dtype=torch.int64),) * 2),
                            TypeError, "state must be a floating-point tensor"),
    "a state that is a number": (_forward(lambda torch: torch.zeros(2, 1, 3), lambda torch: 0.0),
                                 TypeError, "state must be a tuple of tensors"),
    "a state part that is a list": (_forward(lambda torch: torch.zeros(2, 1, 3),
                                             lambda torch: ([[0.0]], [[0.0]])),
                                    TypeError, "state must be a torch.Tensor, got list"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(API_CASES))
def test_the_python_api_refuses_bad_arguments_by_name(case):
    call, kind, words = API_CASES[case]
    with pytest.raises(kind, match=None) as info:
        call()
    assert words in str(info.value), str(info.value)
