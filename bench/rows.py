"""What the quality benchmarks share: a row is a name and its exact ``rnnlab train`` arguments;
``run_rows`` runs the rows without a result yet, continuing interrupted ones exactly."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from rnnlab.cli import main as rnnlab_main


def options(**opts: object) -> list[str]:
    """``rnnlab train`` arguments from keyword options (hidden_size=36 -> --hidden-size 36)."""
    return [a for k, v in opts.items() for a in ("--" + k.replace("_", "-"), str(v))]


def run_rows(commands: dict[str, list[str]], out: Path) -> None:
    """``commands``: row name -> its ``rnnlab train`` argv (with ``--out``)."""
    for name, argv in commands.items():
        run = out / name
        if (run / "result.json").is_file():
            continue
        if (run / "config.json").is_file():
            # Resuming is exact, so the row's result is that of its command run in one go.
            epochs = argv[argv.index("--epochs") + 1]
            argv = ["train", "--out", str(run), "--resume", "--epochs", epochs]
        print("$ rnnlab " + shlex.join(argv), flush=True)
        code = rnnlab_main(argv + ["--no-progress"])
        if code != 0:
            print(f"row {name} failed with exit code {code}", file=sys.stderr)


def result_of(run: Path) -> dict[str, object]:
    """A run's result.json, or {} while it has none."""
    path = run / "result.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def fmt(value: object, spec: str) -> str:
    """A table cell: the value formatted, or - where there is none."""
    return "-" if value is None else format(value, spec)
