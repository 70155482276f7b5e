"""Every `rnnlab train` command quoted in the README and docs/results.md still parses into a valid
configuration of its family (nothing is trained): the docs' commands run as written."""

import re
import shlex
from pathlib import Path

import pytest

from rnnlab.cli import parse_train
from rnnlab.families import make_config

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    found = []
    for doc in ("README.md", "docs/results.md", "docs/studies.md"):
        text = (ROOT / doc).read_text()
        for match in re.finditer(r"rnnlab train[^`\n\\]*(?:\\\n[^`\n\\]*)*", text):
            line = match.group(0).replace("\\\n", " ")
            line = line.split("#")[0].strip()
            skip = ("--resume", "...", "(", "--help", "--data mine")
            if any(s in line for s in skip):
                continue  # a resumed run's own config; elided options; a user's own set
            found.append((doc, line))
        # Tables whose options column leaves out the data (it has its own column): JSB.
        for match in re.finditer(r"`(--model (?:rnn|rnn-nade|vrnn) [^`]*)`", text):
            found.append((doc, f"rnnlab train --data jsb {match.group(1)}"))
    return found


COMMANDS = _commands()


def test_the_docs_quote_training_commands():
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(
    "doc,line", COMMANDS, ids=[f"{d}:{i}" for i, (d, _) in enumerate(COMMANDS)]
)
def test_a_documented_command_parses(doc, line, monkeypatch):
    argv = shlex.split(line)[2:]
    if "--data-dir" not in argv and any(a in ("ptb", "ptb-char") for a in argv):
        monkeypatch.setenv("RNNLAB_DATA", str(ROOT.parent / "shared" / "data"))
    family, _, given = parse_train(argv)
    make_config(given, family)
