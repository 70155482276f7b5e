"""Training: checkpoints, exact resume, NaN handling, run directories."""

import json

import pytest
import torch

import rnnlab
from rnnlab.errors import ConfigError, RunDirError, TrainingDiverged
from rnnlab.families.music import RNNConfig, load_sequences
from rnnlab.metrics import evaluate_nll
from rnnlab.models import ModelConfig, RNNPredictor
from rnnlab.train import load_run, train_run
from rnnlab.train.checkpoint import load_model_weights, load_tensors, save_model, save_tensors


def _cfg(data, **train):
    options = dict(cell="lstm-cifg", hidden_size=6, dropout=0.2, zoneout=0.1,
                   recurrent_dropout=0.1, data=str(data), batch_size=2, lr=0.01)  # fmt: skip
    return RNNConfig(**(options | train))


def test_run_directory_contents(tiny_npz, tmp_path):
    out = tmp_path / "run"
    result = train_run(out, _cfg(tiny_npz, epochs=3), progress=False, log=lambda s: None)
    events = [p.name for p in out.iterdir() if p.name.startswith("events.out.tfevents.")]
    assert len(events) == 1  # TensorBoard's scalars (tests/test_progress.py reads them back)
    assert {p.name for p in out.iterdir()} - {*events, ".lock"} == {
        "config.json",
        "assets.json",
        "metrics.jsonl",
        "model.safetensors",
        "checkpoint.safetensors",
        "result.json",
    }
    document = json.loads((out / "config.json").read_text())
    assert document["family"] == "rnn" and document["config"]["cell"] == "lstm-cifg"
    assert document["score"] == {"name": "nll", "label": "NLL", "unit": "nats/frame",
                                 "direction": "minimize"}  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    saved = json.loads((out / "result.json").read_text())
    assert saved == result
    for key in ("best_epoch", "valid_nll", "test_nll", "num_params", "wall_time_s", "versions"):
        assert key in result
    assert result["valid_nll"] == min(r["valid_nll"] for r in rows) == result["valid_score"]
    assert result["test_nll"] == result["test_score"] and result["model"] == "rnn"


def test_eval_recomputes_the_reported_metric(tiny_npz, tmp_path):
    out = tmp_path / "run"
    result = train_run(out, _cfg(tiny_npz, epochs=3), progress=False, log=lambda s: None)
    run = load_run(out)
    data = load_sequences(run.cfg.data)
    assert evaluate_nll(run.model, data["test"]).nll == pytest.approx(result["test_nll"], rel=1e-6)
    assert run.meta["epoch"] == result["best_epoch"]
    model = rnnlab.load(out)  # the one-line API: the same weights, in evaluation mode
    assert not model.training
    for (name, a), (_, b) in zip(
        model.state_dict().items(), run.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_round_trip(tmp_path):
    model = RNNPredictor(ModelConfig(cell="lstm-fgr", hidden_size=5, layer_norm=True))
    save_model(tmp_path / "m.safetensors", model, {"epoch": 3})
    other = RNNPredictor(ModelConfig(cell="lstm-fgr", hidden_size=5, layer_norm=True))
    meta = load_model_weights(tmp_path / "m.safetensors", other)
    assert meta == {"epoch": 3}
    for (name, a), (_, b) in zip(
        model.state_dict().items(), other.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    wrong = RNNPredictor(ModelConfig(cell="gru", hidden_size=5))
    with pytest.raises(RunDirError, match="does not match"):
        load_model_weights(tmp_path / "m.safetensors", wrong)


def test_shared_tensors_are_written_once_and_come_back_under_every_key(tmp_path):
    tied = torch.randn(50, 40)
    block = torch.randn(6, 4)
    tensors = {"embedding.weight": tied, "decoder.weight": tied, "top": block[:3], "all": block}
    save_tensors(tmp_path / "t.safetensors", tensors, {"epoch": 1})
    once = tmp_path / "once.safetensors"
    save_tensors(once, {"embedding.weight": tied}, {"epoch": 1})
    size = (tmp_path / "t.safetensors").stat().st_size
    assert size - once.stat().st_size < 50 * 40 * 4  # the tied matrix is stored once
    back, meta = load_tensors(tmp_path / "t.safetensors")
    assert meta == {"epoch": 1} and back.keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.equal(back[key], value), key
    assert back["embedding.weight"] is back["decoder.weight"]


def test_resume_continues_exactly(tiny_npz, tmp_path):
    """4 epochs in one go == 2 epochs, stop, resume to 4: identical metrics and weights."""
    whole = tmp_path / "whole"
    train_run(whole, _cfg(tiny_npz, epochs=4, seed=5), progress=False, log=lambda s: None)
    split = tmp_path / "split"
    train_run(split, _cfg(tiny_npz, epochs=2, seed=5), progress=False, log=lambda s: None)
    torch.manual_seed(1234)  # a resumed process starts with another RNG state
    train_run(split, None, resume=True, epochs=4, progress=False, log=lambda s: None)

    def rows(run):
        return [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()
        ]

    assert rows(split) == rows(whole)
    a, b = load_run(whole).model, load_run(split).model
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tiny_npz, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train_run(out, _cfg(tiny_npz, epochs=2), progress=False, log=lambda s: None)
    before = (out / "checkpoint.safetensors").read_bytes()
    metrics_before = (out / "metrics.jsonl").read_text()

    real_forward = RNNPredictor.forward

    def poisoned(self, x, lengths, first_input=None):
        out = real_forward(self, x, lengths, first_input)
        return out._replace(total=out.total * float("nan"))

    monkeypatch.setattr(RNNPredictor, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"NaN|nan.*last good checkpoint \(epoch 2\)"):
        train_run(out, None, resume=True, epochs=4, progress=False, log=lambda s: None)
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert (out / "metrics.jsonl").read_text() == metrics_before


def test_run_directory_errors(tiny_npz, tmp_path):
    out = tmp_path / "run"
    train_run(out, _cfg(tiny_npz, epochs=1), progress=False, log=lambda s: None)
    with pytest.raises(RunDirError, match="already exists.*--resume"):
        train_run(out, _cfg(tiny_npz, epochs=1), progress=False)
    with pytest.raises(RunDirError, match="not a run directory"):
        train_run(tmp_path / "nothing", None, resume=True, progress=False)
    with pytest.raises(RunDirError, match="not a run directory"):
        load_run(tmp_path)
    with pytest.raises(ConfigError, match="only --epochs, --device and --threads may change"):
        train_run(out, _cfg(tiny_npz, epochs=1, lr=0.5), resume=True, progress=False)


def test_weight_noise_perturbs_the_gradient_but_not_the_weights():
    """The gradient is taken at noisy weights; the weights themselves get only the update."""
    from rnnlab.data import make_batches, to_tensors
    from rnnlab.train.loop import train_step

    torch.manual_seed(0)
    model = RNNPredictor(ModelConfig(cell="gru", hidden_size=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = make_batches(to_tensors([torch.rand(5, 88).numpy() < 0.1]), 1, shuffle=False)[0]
    sgd = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: any change would be noise left behind
    train_step(model, batch, sgd, clip=0.0, weight_noise=0.5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    grads_noisy = [p.grad.clone() for p in model.parameters()]
    train_step(model, batch, sgd, clip=0.0, weight_noise=0.0)
    grads_clean = [p.grad for p in model.parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(grads_noisy, grads_clean, strict=True))


def test_window_training_runs(tiny_npz, tmp_path):
    result = train_run(
        tmp_path / "w", _cfg(tiny_npz, epochs=2, window=3), progress=False, log=lambda s: None
    )
    assert result["epochs_run"] == 2


def test_train_config_validation():
    with pytest.raises(ConfigError, match="Did you mean 'adam'"):
        RNNConfig(optimizer="adma")
    with pytest.raises(ConfigError, match="lr must be positive"):
        RNNConfig(lr=0)
    with pytest.raises(ConfigError, match="finite"):
        RNNConfig(clip=float("nan"))
    with pytest.raises(ConfigError, match="hidden_size must be int"):
        RNNConfig.from_dict({"hidden_size": "8"})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['hiden_size'\]"):
        RNNConfig.from_dict({"hiden_size": 8})


def test_a_failed_start_leaves_nothing_behind(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Exception, match="does not exist"):
        train_run(out, RNNConfig(data=str(tmp_path / "missing.npz")), progress=False)
    assert not out.exists()


_STOPPED_IN_EPOCH_1 = """
import sys, time
from pathlib import Path
from rnnlab.train import loop
def stuck(*args, **kwargs):  # epoch 1 never ends: the signal arrives in it
    Path(sys.argv[1]).touch()
    time.sleep(120)
loop._run_epoch = stuck
from rnnlab.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _start_stuck(tmp_path, argv, name):
    """A `rnnlab train` process that waits in its first epoch (after config.json is written)."""
    import subprocess
    import sys
    import time

    flag = tmp_path / name
    process = subprocess.Popen([sys.executable, "-c", _STOPPED_IN_EPOCH_1, str(flag), *argv],
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    return process


def test_a_run_stopped_in_its_first_epoch_starts_again(tiny_npz, tmp_path, capsys):
    """SIGTERM stops a run as Ctrl-C does (a run without a checkpoint removes its files);
    after SIGKILL, whose files stay, the same command starts the run afresh, while --resume
    says there is nothing to resume. A run that a living process trains is refused as such."""
    import signal

    from rnnlab.cli import main

    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_npz), "--hidden-size", "4", "--epochs", "1",
            "--out", str(out), "--no-progress"]  # fmt: skip
    process = _start_stuck(tmp_path, argv, "term")
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 143, process.stderr.read()
    assert "rnnlab: terminated" in process.stderr.read() and not out.exists()

    process = _start_stuck(tmp_path, argv, "kill")
    assert main(argv) == 2  # the process lives: refused, and not told to --resume
    err = capsys.readouterr().err
    assert "being trained by another process" in err and "--resume" not in err, err
    process.kill()
    process.wait(60)
    assert (out / "config.json").is_file() and not (out / "checkpoint.safetensors").exists()
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "result.json").read_text())["epochs_run"] == 1


def test_resume_takes_the_options_it_already_has(tiny_npz, tmp_path, capsys):
    from rnnlab.cli import main

    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_npz), "--hidden-size", "4", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main([*argv, "--epochs", "2"]) == 0
    config = (out / "config.json").read_text()
    assert main([*argv, "--resume", "--epochs", "1"]) == 2  # fewer than it has run
    assert "--epochs 1 is below the 2 epoch(s)" in capsys.readouterr().err
    assert (out / "config.json").read_text() == config
    assert main([*argv, "--resume", "--model", "rnn", "--epochs", "3"]) == 0
    assert json.loads((out / "result.json").read_text())["epochs_run"] == 3
    assert main([*argv, "--resume", "--hidden-size", "5", "--epochs", "3"]) == 2
    assert "(got --hidden-size)" in capsys.readouterr().err
