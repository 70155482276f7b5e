"""Studies on a real PostgreSQL server: a throwaway cluster (Debian's postgresql package) on
loopback, two workers on one study, one of them killed mid-trial. Skipped, with the reason, where
the server binaries or the driver are missing."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from rnnlab.cli import main
from rnnlab.study import runner
from tests.test_study import _space, _worker


def _pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver psycopg2 is not installed")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    # In /tmp itself: pytest's own temporary directories are private to their user, and the
    # server refuses to run as root, so under root it runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="rnnlab-pg-"))
    as_user = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = root / "db"
    subprocess.run([*as_user, initdb, "-D", str(db), "--auth=trust", "-U", "postgres"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {root}"  # loopback only
    subprocess.run([*as_user, pg_ctl, "-D", str(db), "-l", str(root / "log"), "-w", "start",
                    "-o", options], check=True, capture_output=True)  # fmt: skip
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, pg_ctl, "-D", str(db), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_two_workers_on_postgres_one_killed_mid_trial(tmp_path, tiny_npz, postgres_url):
    space = _space(tmp_path, tiny_npz, epochs=60)
    studies = tmp_path / "studies"
    argv = ["study", "create", "pg", "--space", str(space), "--trials", "6", "--dir",
            str(studies), "--storage", postgres_url]  # fmt: skip
    assert main(argv) == 0
    # The survivor must outlive the grace period of its dead partner's trial, not its own.
    first = _worker(tmp_path, "pg", 0, "--storage", postgres_url, grace=6)
    victim = _worker(tmp_path, "pg", 1, "--storage", postgres_url)
    # Killed only once both train (past loading the C++ extension: a process killed while it
    # holds torch's extension lock leaves the lock behind, and the survivor would wait on it).
    deadline = time.time() + 600
    while time.time() < deadline and len(list(studies.glob("pg/trial-*/checkpoint.*"))) < 2:
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)  # dies in the middle of a trial
    victim.wait()
    out = first.communicate(timeout=900)[0]
    assert first.returncode == 0, out
    study, _ = runner.load_study("pg", postgres_url)
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 6
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and "retry of" in out
    runs = [t.user_attrs["run"] for t in study.get_trials() if t.user_attrs.get("run")]
    assert len(runs) == len(set(runs)) == 6  # every trial once, in its own run directory
