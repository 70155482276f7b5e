"""What a run says while it trains: one line per epoch when the output is not a terminal (no
carriage-return redraws), and TensorBoard scalars that match metrics.jsonl."""

import json
import subprocess
import sys

import pytest

from rnnlab.train.progress import tensorboard_tags


def test_written_to_a_file_a_run_reads_as_one_line_per_epoch(tiny_npz, tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "rnnlab.cli", "train", "--data", str(tiny_npz), "--epochs", "4",
            "--hidden-size", "6", "--batch-size", "2", "--out", str(run)]  # fmt: skip
    with open(tmp_path / "log.txt", "w") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=600)
    text = (tmp_path / "log.txt").read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    lines = [line for line in text.splitlines() if not line.startswith("rnnlab: buil")]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == [f"epoch {k}/4" for k in range(1, 5)]
    assert len(lines) == 6 and "nats/frame" in epochs[0] and "ETA" in epochs[0]


def test_tensorboard_scalars_match_the_metrics(tiny_npz, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rnnlab.families.music import RNNConfig
    from rnnlab.train import train_run

    run = tmp_path / "run"
    cfg = RNNConfig(data=str(tiny_npz), hidden_size=5, batch_size=2, epochs=3)
    train_run(run, cfg, progress=False, log=lambda s: None)
    events = EventAccumulator(str(run))
    events.Reload()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for tag in ("nll/train", "nll/valid", "lr", "grad_norm", "seconds"):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2, 3]
        key = {"nll/train": "train_nll", "nll/valid": "valid_nll"}.get(tag, tag)
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_tags_name_the_quantity_then_the_split():
    row = {"epoch": 2, "train_neg_elbo": 3.0, "test_kl_per_frame": 0.25, "valid_stop": False}
    assert tensorboard_tags(row) == {"neg_elbo/train": 3.0, "kl_per_frame/test": 0.25}
