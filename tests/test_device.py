"""--device: names resolved or refused in one line, data moved to the model's device, seeded
draws that do not depend on the device, and runs that change device on resume or evaluation.
The GPU half runs only where torch sees a GPU (none has been lent to this project so far)."""

import json
from collections import namedtuple
from dataclasses import dataclass

import pytest
import torch

from rnnlab import device as draw
from rnnlab.cli import main
from rnnlab.device import check_device, resolve_device, to_device
from rnnlab.errors import ConfigError
from rnnlab.families import family_names

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="torch sees no CUDA GPU on this machine")


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", " CPU "])
def test_device_names_are_understood(name):
    assert check_device(name) == name.strip().lower()


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "", "cpu:0", "mps", "cuda:-1"])
def test_other_device_names_are_refused_with_the_valid_ones(name):
    with pytest.raises(ConfigError, match="choose one of auto, cpu, cuda"):
        check_device(name)


def test_auto_is_the_gpu_where_there_is_one():
    assert resolve_device("auto").type == ("cuda" if GPU else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_clear_line(tmp_path, tiny_npz, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(tiny_npz), "--device", "cuda", "--epochs", "1",
                 "--out", str(out), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "sees no CUDA GPU" in err and "--device cpu" in err
    assert "Traceback" not in err and not out.exists()  # nothing left to block the next command
    for command in (["eval", str(out)], ["bench", "speed", "--cells", "tanh"]):
        assert main([*command, "--device", "cuda"]) == 2
        assert "sees no CUDA GPU" in capsys.readouterr().err


def test_to_device_moves_every_tensor_and_keeps_the_containers():
    @dataclass(frozen=True)
    class Box:
        x: torch.Tensor
        note: str
        rest: tuple

    Pair = namedtuple("Pair", "a b")
    item = {"box": Box(torch.ones(2), "n", (torch.zeros(1), 3)), "pair": Pair(torch.ones(1), [1])}
    moved = to_device(item, torch.device("cpu"))
    assert isinstance(moved["box"], Box) and moved["box"].note == "n"
    assert isinstance(moved["pair"], Pair) and moved["pair"].b == [1]
    assert torch.equal(moved["box"].rest[0], torch.zeros(1)) and moved["box"].rest[1] == 3


def test_seeded_draws_are_the_cpu_generators_own_numbers():
    """Drawn on the CPU from the generator, whatever the device: the same numbers as torch's
    own CPU draws (so the seeds of the CPU runs keep drawing what they drew before)."""
    like = torch.zeros(1, dtype=torch.float64)
    p = torch.rand(4, 5)
    probs = torch.softmax(torch.randn(6, 7), -1)

    def g():
        return torch.Generator().manual_seed(3)

    assert torch.equal(draw.normal((4, 5), g(), like),
                       torch.randn(4, 5, generator=g(), dtype=torch.float64))  # fmt: skip
    assert torch.equal(draw.uniform((4, 5), g(), like), torch.rand(4, 5, generator=g()))
    assert torch.equal(draw.bernoulli(p, g()), torch.bernoulli(p, generator=g()))
    assert torch.equal(draw.categorical(probs, g()), torch.multinomial(probs, 1, generator=g()))


def test_resume_may_change_device_and_threads_and_records_them(tmp_path, tiny_npz, capsys):
    out = tmp_path / "run"
    base = ["train", "--data", str(tiny_npz), "--hidden-size", "4", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main([*base, "--epochs", "1", "--device", "auto"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--device", "cpu",
                 "--threads", "1", "--no-progress"]) == 0  # fmt: skip
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["device"], config["threads"], config["epochs"]) == ("cpu", 1, 2)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--device", "tpu", "--no-progress"]) == 2
    assert "choose one of auto, cpu, cuda" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["config"]["device"] == "cpu"


@needs_gpu
@pytest.mark.parametrize("family", family_names())
def test_a_run_trained_on_the_gpu_evaluates_and_resumes_on_the_cpu(family, tmp_path, capsys):
    """Trained on the GPU, evaluated there and on the CPU (the same figures within float
    rounding: the seeded draws are the CPU generator's on both), then resumed on the CPU."""
    from family_fixtures import family_data

    out = tmp_path / "run"
    argv = family_data(tmp_path)[family]
    assert main(["train", *argv, "--epochs", "1", "--device", "cuda", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    figures = {}
    for where in ("cuda", "cpu"):
        assert main(["eval", str(out), "--split", "valid", "--device", where]) == 0
        figures[where] = capsys.readouterr().out
    assert figures["cuda"] == figures["cpu"]  # printed to 3-4 significant digits
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--device", "cpu",
                 "--no-progress"]) == 0  # fmt: skip
