"""Smoke tests of every command, on tiny data, and the one-line errors of bad input."""

import json
import subprocess
import sys

import pytest

from rnnlab.cli import main


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_command(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, _ = _run(
        [
            "train",
            "--data",
            tiny_npz,
            "--cell",
            "gru-v1",
            "--hidden-size",
            "5",
            "--epochs",
            "2",
            "--batch-size",
            "2",
            "--out",
            run,
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0 and "test NLL" in out
    code, out, _ = _run(
        ["train", "--out", run, "--resume", "--epochs", "3", "--no-progress"], capsys
    )
    assert code == 0 and json.loads((run / "result.json").read_text())["epochs_run"] == 3
    code, out, _ = _run(["eval", run, "--split", "valid"], capsys)
    assert code == 0 and "valid: NLL" in out
    png = tmp_path / "curves.png"
    code, out, _ = _run(["compare", run, run, "--plot", png], capsys)
    assert code == 0 and out.startswith("| run |") and png.stat().st_size > 1000
    code, out, _ = _run(["data", "list"], capsys)
    assert code == 0 and "nottingham" in out
    code, out, _ = _run(["data", "show", "jsb"], capsys)
    assert code == 0 and "| train | 229 |" in out
    code, out, _ = _run(["data", "show", tiny_npz], capsys)
    assert code == 0 and "| valid | 3 |" in out
    code, out, _ = _run(["cells"], capsys)
    assert code == 0 and "lstm-fgr" in out.split()
    bench = tmp_path / "speed.json"
    argv = ["bench", "speed", "--cells", "tanh", "--shapes", "2,3,4,5", "--repeats", "1"]
    code, out, _ = _run([*argv, "--no-memory", "--out", bench], capsys)
    assert code == 0 and "| 2,3,4,5 | tanh |" in out
    assert json.loads(bench.read_text())["rows"][0]["cell"] == "tanh"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--cell", "lstm-nf"], "unknown cell 'lstm-nf'. Did you mean 'lstm-nfg'?"),
        (["train", "--data", "jbs"], "unknown dataset 'jbs'. Did you mean 'jsb'?"),
        (["train", "--optimizer", "adamw"], "unknown optimizer 'adamw'"),
        (["train", "--data", "missing.npz"], "missing.npz does not exist"),
        (["eval", "."], "is not a run directory"),
        (["compare", "nowhere"], "nowhere is not a run directory"),
        (["data", "show", "musedta"], "Did you mean 'musedata'"),
        (["train", "--resume"], "--resume needs --out"),
    ],
)
def test_bad_input_gets_one_clear_line(argv, message, capsys):
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupt_data_file(tmp_path, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not a zip")
    code, _, err = _run(["train", "--data", bad, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "broken.npz: not a plain array file" in err


def test_resume_refuses_other_options(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    _run(
        [
            "train",
            "--data",
            tiny_npz,
            "--hidden-size",
            "4",
            "--epochs",
            "1",
            "--out",
            run,
            "--no-progress",
        ],
        capsys,
    )
    code, _, err = _run(["train", "--out", run, "--resume", "--lr", "0.1"], capsys)
    assert code == 2 and "only --epochs, --device and --threads may change (got --lr)" in err
    code, _, err = _run(["train", "--data", tiny_npz, "--out", run], capsys)
    assert code == 2 and "already exists" in err


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", "cells"], capture_output=True, text=True, check=True
    )
    assert "gru-v1" in result.stdout


def test_damaged_run_directory(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    _run(
        ["train", "--data", tiny_npz, "--hidden-size", "4", "--epochs", "1", "--out", run,
         "--no-progress"],
        capsys,
    )  # fmt: skip
    (run / "model.safetensors").write_bytes(b"\x00" * 10)
    code, _, err = _run(["eval", run], capsys)
    assert code == 2 and "model.safetensors is not a readable safetensors file" in err
    assert "Traceback" not in err
    (run / "config.json").write_text("{not json")
    code, _, err = _run(["eval", run], capsys)
    assert code == 2 and "config.json is not valid JSON" in err


def _model_commands():
    """Every command line that runs a model: the subcommands that take a run directory (found
    in the parser, not listed by hand), train, study run and bench speed."""
    import argparse

    from rnnlab.cli import build_parser

    def subparsers(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from action.choices.items()

    found = []
    for name, sub in subparsers(build_parser()):
        positionals = [a.dest for a in sub._actions if not a.option_strings]
        if "run" in positionals:
            found.append([name] + ["X"] * (len(positionals) - 1))
    assert {c[0] for c in found} >= {"eval", "sample", "generate"}, found
    return [*found, ["train"], ["study", "run", "X"], ["bench", "speed"]]


@pytest.mark.parametrize("command", _model_commands(), ids=lambda c: " ".join(c[:2]))
def test_every_command_that_runs_a_model_takes_device_and_threads(command, capsys):
    with pytest.raises(SystemExit):
        main([command[0], *(["RUN"] if command[0] not in ("train", "study", "bench") else []),
              *command[1:], "--help"])  # fmt: skip
    out = capsys.readouterr().out
    assert "--threads" in out and "--device" in out
