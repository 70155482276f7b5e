"""Where models run: ``--device cpu|cuda|auto`` resolved once, data moved to the model's device,
and random draws that do not depend on the device.

Seeded draws (evaluation noise, importance samples, sampling and generation) are made on the
CPU from a CPU ``torch.Generator`` and then moved to the model's device, so that a seed draws
the same numbers wherever the model runs: a run trained on a GPU and evaluated on the CPU (or the
reverse) sees the same samples, and its figures differ only by floating-point rounding. Draws
without a generator (dropout during training) are made on the device itself.

>>> resolve_device("cpu")
device(type='cpu')
>>> to_device({"x": torch.zeros(2), "n": 3}, torch.device("cpu"))["n"]
3
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch
from torch import Tensor, nn

from rnnlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
T = TypeVar("T")


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU where torch sees one, else the CPU; ``cpu``; ``cuda`` or ``cuda:N``
    (an error, in one line, where torch sees no such GPU)."""
    text = check_device(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    index = text.partition(":")[2]
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ConfigError(f"--device {name}: torch ({torch.__version__}, {build}) sees no CUDA "
                          "GPU on this machine; use --device cpu (or auto)")  # fmt: skip
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise ConfigError(f"--device {name}: this machine has {count} CUDA GPU(s), "
                          f"cuda:0 to cuda:{count - 1}")  # fmt: skip
    return torch.device(text)


def check_device(name: str) -> str:
    """A device name's syntax (``auto``, ``cpu``, ``cuda``, ``cuda:N``), normalised; whether
    this machine has it is :func:`resolve_device`'s question."""
    text = str(name).strip().lower()
    kind, colon, index = text.partition(":")
    if text in DEVICES or (kind == "cuda" and colon and index.isdigit()):
        return text
    raise ConfigError(f"--device {name!r}: choose one of {', '.join(DEVICES)} (or cuda:N)")


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def to_device(obj: T, device: torch.device) -> T:
    """``obj`` with every tensor in it on ``device``: tensors, and tuples, lists, dicts and
    dataclasses of them (anything else is returned as it is)."""
    if isinstance(obj, Tensor):
        return obj.to(device)  # type: ignore[return-value]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: to_device(getattr(obj, f.name), device)
                   for f in dataclasses.fields(obj) if f.init}  # fmt: skip
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    if isinstance(obj, tuple):
        items = [to_device(v, device) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)  # type: ignore[return-value]
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]  # type: ignore[return-value]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}  # type: ignore[return-value]
    return obj


def normal(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None,
           like: Tensor) -> Tensor:  # fmt: skip
    """Standard normal noise of ``shape`` with ``like``'s dtype, on ``like``'s device; drawn on
    the CPU from ``generator`` when one is given (the same numbers on every device)."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


def uniform(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None,
            like: Tensor) -> Tensor:  # fmt: skip
    """U[0, 1) of ``shape`` on ``like``'s device (float32), drawn like :func:`normal`."""
    if generator is None:
        return torch.rand(shape, device=like.device)
    return torch.rand(shape, generator=generator).to(like.device)


def bernoulli(p: Tensor, generator: torch.Generator | None) -> Tensor:
    """Bernoulli(p) draws on ``p``'s device (drawn on the CPU from ``generator`` if given)."""
    if generator is None:
        return torch.bernoulli(p)
    return torch.bernoulli(p.cpu(), generator=generator).to(p.device)


def categorical(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row of ``probs`` (..., K) -> (..., 1), drawn like :func:`bernoulli`."""
    if generator is None:
        return torch.multinomial(probs, 1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)
