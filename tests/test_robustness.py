"""Bad states a run directory can be in, each one clear error and nothing lost: a run being
trained twice, damaged weights, a finite blow-up, a failure before the first epoch, temporary
files left by a kill."""

import pytest
import torch

from rnnlab.cli import main
from rnnlab.errors import RunDirError, TrainingDiverged
from rnnlab.families.music import RNNConfig
from rnnlab.models import RNNPredictor
from rnnlab.train import train_run
from rnnlab.train.loop import run_lock


def _cfg(data, **options):
    return RNNConfig(**({"data": str(data), "hidden_size": 5, "batch_size": 2, "epochs": 2}
                        | options))  # fmt: skip


def _quiet(**kw):
    return {"progress": False, "log": lambda s: None, "tensorboard": False, **kw}


def test_a_run_being_trained_is_not_trained_twice(tiny_npz, tmp_path):
    out = tmp_path / "run"
    train_run(out, _cfg(tiny_npz), **_quiet())
    with run_lock(out), pytest.raises(RunDirError, match="being trained by another process"):
        train_run(out, None, resume=True, epochs=3, **_quiet())
    train_run(out, None, resume=True, epochs=3, **_quiet())  # the lock was released


def test_damaged_weights_are_refused_not_used(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    train_run(out, _cfg(tiny_npz), **_quiet())
    for name in ("model.safetensors", "checkpoint.safetensors"):
        path = out / name
        good = path.read_bytes()
        damaged = bytearray(good)
        damaged[-20] ^= 0x04  # a flipped bit inside a tensor
        path.write_bytes(bytes(damaged))
        command = ["eval", str(out)] if name == "model.safetensors" else [
            "train", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"]  # fmt: skip
        assert main(command) == 2
        assert f"{name} fails its checksum" in capsys.readouterr().err
        path.write_bytes(good)
    assert main(["eval", str(out)]) == 0


def test_a_finite_blow_up_ends_the_run(tiny_npz, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tiny_npz, optimizer="sgd", lr=1e6, clip=0.0, epochs=3)
    with pytest.raises(TrainingDiverged, match="rose to .* before training"):
        train_run(out, cfg, **_quiet())


def test_a_failure_before_the_first_epoch_leaves_nothing_behind(tiny_npz, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = RNNPredictor.forward

    def poisoned(self, x, lengths, first_input=None):
        result = real(self, x, lengths, first_input)
        return result._replace(total=result.total * float("nan")) if self.training else result

    monkeypatch.setattr(RNNPredictor, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="no epoch had finished, so there is nothing"):
        train_run(out, _cfg(tiny_npz), **_quiet())
    assert not out.exists()
    monkeypatch.setattr(RNNPredictor, "forward", real)
    train_run(out, _cfg(tiny_npz), **_quiet())  # the corrected command is not refused


def test_temporary_files_of_a_killed_writer_are_removed(tiny_npz, tmp_path):
    out = tmp_path / "run"
    train_run(out, _cfg(tiny_npz), **_quiet())
    (out / "tmpab12cd.tmp").write_bytes(b"half a checkpoint")
    train_run(out, None, resume=True, epochs=3, **_quiet())
    assert not list(out.glob("*.tmp"))


def test_resume_restores_the_untrained_reference(tiny_npz, tmp_path):
    from rnnlab.train.checkpoint import load_tensors

    out = tmp_path / "run"
    train_run(out, _cfg(tiny_npz, epochs=1), **_quiet())
    _, meta = load_tensors(out / "checkpoint.safetensors")
    assert torch.isfinite(torch.tensor(meta["counters"]["untrained_valid"]))
