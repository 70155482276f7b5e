"""Studies on Optuna: the search space, two workers on one study, a worker killed mid-trial,
resuming an interrupted study, and the report. The file store (SQLite) here; PostgreSQL in
test_study_postgres.py."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pytest

from rnnlab.cli import main
from rnnlab.errors import ConfigError
from rnnlab.study import runner
from rnnlab.study.space import load_space

ENV = {**os.environ, "RNNLAB_HEARTBEAT_S": "1", "RNNLAB_GRACE_S": "4", "PYTHONWARNINGS": "ignore"}


def _space(tmp_path, tiny_npz, epochs=2):
    space = {"params": {"cell": {"type": "categorical", "choices": ["lstm-v", "lstm-nfg"]},
                        "hidden_size": {"type": "int", "low": 3, "high": 8, "log": True},
                        "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
                        "momentum": {"type": "one_minus_log", "low": 0.1, "high": 1.0}},
             "fixed": {"data": str(tiny_npz), "optimizer": "sgd", "epochs": epochs,
                       "batch_size": 2, "dropout": 0.0, "threads": 1, "patience": 0}}  # fmt: skip
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    return path


def _worker(tmp_path, name, k, *extra, grace=4):
    """A worker process; a short grace period where a test waits for a trial to go stale, a
    longer one where two live workers must not take each other's trials for dead."""
    cmd = [sys.executable, "-m", "rnnlab.cli", "study", "run", name, "--dir",
           str(tmp_path / "studies"), "--worker", str(k), *extra]  # fmt: skip
    env = {**ENV, "RNNLAB_GRACE_S": str(grace)}
    return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _trials(tmp_path, name):
    storage = runner.default_storage(tmp_path / "studies", name)
    study, _ = runner.load_study(name, storage)
    return study.get_trials()


def test_the_greff_preset_and_bad_spaces(tmp_path):
    space = load_space("greff")
    assert len(space["params"]["cell"]["choices"]) == 9 and space["fixed"]["data"] == "jsb"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"params": {"hiden_size": {"type": "int", "low": 1, "high": 2}}}))
    with pytest.raises(ConfigError, match="unknown option 'hiden_size'"):
        load_space(str(bad))
    bad.write_text(json.dumps({"params": {"lr": {"type": "gamma", "low": 1, "high": 2}}}))
    with pytest.raises(ConfigError, match="type must be one of"):
        load_space(str(bad))
    with pytest.raises(ConfigError, match="unknown search space"):
        load_space("gref")
    studies = tmp_path / "studies"
    argv = ["study", "create", "s", "--trials", "3", "--stratify", "lr", "--dir", str(studies)]
    assert main(argv) == 2  # refused before anything is created
    assert main(["study", "status", "s", "--dir", str(studies)]) == 2


def test_two_workers_share_a_study_and_no_trial_runs_twice(tmp_path, tiny_npz, capsys):
    space = _space(tmp_path, tiny_npz)
    studies = tmp_path / "studies"
    argv = ["study", "create", "two", "--space", str(space), "--trials", "8", "--dir",
            str(studies), "--stratify", "cell"]  # fmt: skip
    assert main(argv) == 0
    workers = [_worker(tmp_path, "two", k, grace=60) for k in (0, 1)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    (tmp_path / "outputs.txt").write_text("\n=====\n".join(outputs))
    assert all(w.returncode == 0 for w in workers), outputs
    ran = [int(o.strip().splitlines()[-1].split()[2]) for o in outputs]
    trials = _trials(tmp_path, "two")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8 == sum(ran) and min(ran) >= 1, outputs  # both workers took trials
    runs = [t.user_attrs["run"] for t in complete]
    assert len(set(runs)) == 8  # each trial its own run directory, none run twice
    cells = [t.params["cell"] for t in complete]
    assert cells.count("lstm-v") == cells.count("lstm-nfg") == 4  # stratified
    assert sorted(p.name for p in (studies / "two").glob("trial-*")) == sorted(
        os.path.basename(r) for r in runs
    )
    assert main(["study", "status", "two", "--dir", str(studies)]) == 0
    assert '"complete": 8' in capsys.readouterr().out


def test_a_killed_workers_trial_is_retried_and_the_study_completes(tmp_path, tiny_npz):
    space = _space(tmp_path, tiny_npz, epochs=400)  # long enough to be killed in the middle
    studies = tmp_path / "studies"
    assert main(["study", "create", "kill", "--space", str(space), "--trials", "2", "--dir",
                 str(studies)]) == 0  # fmt: skip
    victim = _worker(tmp_path, "kill", 0)
    checkpoint = studies / "kill" / "trial-0000" / "checkpoint.safetensors"
    deadline = time.time() + 600  # killed once training: past the extension lock
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(5)  # past the grace period: the trial is stale
    survivor = _worker(tmp_path, "kill", 1)
    out = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, out
    assert "retry of 0" in out
    trials = _trials(tmp_path, "kill")
    states = [t.state for t in trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # the killed one, retried
    retry = next(t for t in trials if t.number == 1 and t.state.is_finished())
    assert retry.params == trials[0].params and retry.user_attrs["run"].endswith("trial-0000")


def test_the_surviving_worker_finishes_a_dead_workers_trial(tmp_path, tiny_npz):
    """Two workers; one is killed mid-trial. The other, done with its own trial, waits for the
    dead one's heartbeat to go stale and runs its retry: the study completes with no new worker."""
    space = _space(tmp_path, tiny_npz, epochs=60)
    studies = tmp_path / "studies"
    assert main(["study", "create", "pair", "--space", str(space), "--trials", "2", "--dir",
                 str(studies)]) == 0  # fmt: skip
    victim = _worker(tmp_path, "pair", 0)
    checkpoint = studies / "pair" / "trial-0000" / "checkpoint.safetensors"
    deadline = time.time() + 600
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.2)
    # A grace period longer than the survivor's own trial: when it finishes, the dead worker's
    # trial still looks alive (the case where a worker used to exit and leave the study short).
    survivor = _worker(tmp_path, "pair", 1, grace=25)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    out = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, out
    assert "retry of 0" in out and "worker 1: 2 trial(s) run" in out
    states = [t.state for t in _trials(tmp_path, "pair")]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2


def test_an_interrupted_study_continues_where_it_stopped(tmp_path, tiny_npz, capsys):
    space = _space(tmp_path, tiny_npz)
    studies = tmp_path / "studies"
    assert main(["study", "create", "stop", "--space", str(space), "--trials", "4",
                 "--dir", str(studies), "--sampler", "tpe"]) == 0  # fmt: skip
    assert main(["study", "run", "stop", "--dir", str(studies), "--max-trials", "1"]) == 0
    assert main(["study", "run", "stop", "--dir", str(studies)]) == 0
    assert "worker 0: 3 trial(s) run" in capsys.readouterr().out
    assert main(["study", "run", "stop", "--dir", str(studies)]) == 0  # nothing left to do
    assert "worker 0: 0 trial(s) run" in capsys.readouterr().out
    assert main(["study", "report", "stop", "--dir", str(studies)]) == 0
    page = (studies / "stop" / "stop.html").read_text()
    md = (studies / "stop" / "stop.md").read_text()
    assert "data:image/png;base64," in page and "fANOVA" in page and "Welch" in md
    _screenshot(studies / "stop" / "stop.html", tmp_path / "shot.png")
    assert main(["study", "create", "stop", "--space", str(space), "--trials", "4",
                 "--dir", str(studies)]) == 2  # fmt: skip
    assert "already exists" in capsys.readouterr().err


def _screenshot(page, png):
    """The report renders in headless Chromium (Debian's chromium) to a non-empty screenshot."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={png}", "--window-size=1000,1400", page.as_uri()],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.shape[:2] == (1400, 1000) and pixels.std() > 0.05  # not a blank page


def test_a_trial_taken_by_a_worker_killed_before_its_first_heartbeat_is_reclaimed(
    tmp_path, tiny_npz, monkeypatch
):
    """Found by the second bad-input hunt: a worker killed between taking a trial and recording
    its first heartbeat left a RUNNING trial that Optuna never calls stale (it has no heartbeat),
    and the study never finished. Such a trial, past the grace period, is failed and retried."""
    space = _space(tmp_path, tiny_npz)
    studies = tmp_path / "studies"
    assert main(["study", "create", "silent", "--space", str(space), "--trials", "2", "--dir",
                 str(studies)]) == 0  # fmt: skip
    storage = runner.default_storage(studies, "silent")
    study, _ = runner.load_study("silent", storage)
    study.ask()  # a trial taken, no heartbeat ever recorded: its worker died at once
    monkeypatch.setattr(runner, "GRACE_S", 0)
    assert runner.run_worker("silent", storage, directory=studies, log=lambda s: None) == 2
    states = [t.state for t in _trials(tmp_path, "silent")]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert states.count(optuna.trial.TrialState.FAIL) == 1
