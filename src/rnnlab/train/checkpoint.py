"""Checkpoints: weights + config + counters in safetensors and JSON, never a pickled object.

Every file is written atomically (a temporary file in the same directory, then ``os.replace``),
so an interrupted write leaves the previous version intact. Loading reads tensors and JSON only:
nothing in a checkpoint can execute code.

A training checkpoint is one safetensors file: ``model.*`` and ``optim.*`` tensors, plus a JSON
document in the metadata holding the counters, the optimizer's scalar state and the RNG state.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from rnnlab.device import model_device
from rnnlab.errors import RunDirError

# The files of a run directory (see rnnlab.train.loop); LOCK is held while it trains.
LOCK = ".lock"
CONFIG, ASSETS, METRICS, CHECKPOINT, MODEL, RESULT = (
    "config.json",
    "assets.json",
    "metrics.jsonl",
    "checkpoint.safetensors",
    "model.safetensors",
    "result.json",
)


def _view_of(t: Tensor) -> tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype]:
    """What makes two tensors the same view of the same memory."""
    offset = int(t.storage_offset())
    return (t.untyped_storage().data_ptr(), offset, tuple(t.shape), t.stride(), t.dtype)


def save_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Atomically write tensors with a JSON metadata document.

    A tensor that is the same view of the same memory as an earlier one (tied weights: the
    embedding and the output layer) is written once and recorded as an alias of the first key;
    ``load_tensors`` gives both keys back. Other tensors sharing memory are written as copies.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    written: dict[tuple[Any, ...], str] = {}  # view -> the key it was written under
    storages: set[int] = set()
    stored: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    for key, value in tensors.items():
        value = value.detach().contiguous().cpu()
        view = _view_of(value)
        if view in written:
            aliases[key] = written[view]
            continue
        if view[0] in storages:  # overlapping memory, but another view: write a copy
            value = value.clone()
            view = _view_of(value)
        written[view] = key
        storages.add(view[0])
        stored[key] = value
    metadata = {"rnnlab": json.dumps(meta), "rnnlab.sha256": tensors_digest(stored)}
    if aliases:
        metadata["rnnlab.aliases"] = json.dumps(aliases)
    try:
        save_file(stored, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: written with
    the file and checked when it is read, so flipped bytes never become a silently wrong model."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def load_tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors (aliases included) and the JSON metadata written by ``save_tensors``."""
    check_readable(path)
    try:
        with safe_open(str(path), framework="pt") as f:  # one read: tensors and metadata
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise RunDirError(f"{path} is not a readable safetensors file ({exc})") from None
    expected = metadata.get("rnnlab.sha256")
    if expected is not None and tensors_digest(tensors) != expected:
        raise RunDirError(
            f"{path} fails its checksum: its tensors are not the bytes that were written "
            "(a damaged file); it is not used"
        )
    try:
        aliases = json.loads(metadata.get("rnnlab.aliases", "{}"))
        tensors.update({key: tensors[source] for key, source in aliases.items()})
        return tensors, json.loads(metadata.get("rnnlab", "{}"))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise RunDirError(f"{path} has malformed rnnlab metadata ({exc!r})") from None


def check_readable(path: Path) -> None:
    """A checkpoint must be a regular file this process may read; each other case is named
    (safetensors itself calls a file it may not read "No such file")."""
    if path.is_dir():
        raise RunDirError(f"{path} is a directory, not a safetensors file")
    if path.is_symlink() and not path.exists():
        raise RunDirError(f"{path} is a broken symbolic link (to {os.readlink(path)})")
    if not path.exists():
        raise RunDirError(f"{path} is missing")
    if not path.is_file():
        raise RunDirError(f"{path} is not a regular file (a device or pipe), not a checkpoint")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise RunDirError(f"{path} cannot be read ({exc.strerror})") from None


def stored_parameter_count(path: Path) -> int:
    """The parameters in a saved model, read from the file's header without loading a tensor.

    Models have no buffers and a tied weight is stored once, so this is the model's count.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise RunDirError(f"{path} is not a readable safetensors file ({exc})") from None


def checkpoint_epoch(path: Path) -> int:
    """The last finished epoch of a training checkpoint, read from its header alone."""
    check_readable(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise RunDirError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        epoch = json.loads(metadata["rnnlab"])["counters"]["epoch"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunDirError(f"{path} has malformed rnnlab metadata ({exc!r})") from None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise RunDirError(f"{path} has malformed rnnlab metadata (epoch {epoch!r})")
    return epoch


def save_model(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    save_tensors(path, dict(model.state_dict()), meta)


def load_model_weights(path: Path, model: nn.Module) -> dict[str, Any]:
    tensors, meta = load_tensors(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != expected:
        differ = sorted(
            k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)
        )
        if "embedding.weight" in differ and "embedding.weight" in found.keys() & expected.keys():
            raise RunDirError(
                f"{path}: vocabulary mismatch: the checkpoint has "
                f"{found['embedding.weight'][0]} words, the data's vocabulary "
                f"{expected['embedding.weight'][0]}"
            )
        raise RunDirError(
            f"{path} does not match the model of its config (differs in {', '.join(differ[:4])})"
        )
    model.load_state_dict(tensors)
    return meta


def save_training_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, counters: dict[str, Any]
) -> None:
    """Model, optimizer and counters, plus the global torch RNG state (and the GPU's, for a model
    on a GPU), in one atomic file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, param_state in opt["state"].items():
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    device = model_device(model)
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    meta = {"counters": counters, "param_groups": opt["param_groups"], "optim_scalars": scalars}
    save_tensors(path, tensors, meta)


def load_training_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore what ``save_training_checkpoint`` wrote; returns the counters."""
    tensors, meta = load_tensors(path)
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if {k: tuple(v.shape) for k, v in model_state.items()} != expected:
        raise RunDirError(f"{path} holds another model than its run's config.json describes "
                          "(other tensors or shapes); it cannot be resumed")  # fmt: skip
    model.load_state_dict(model_state)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    device = model_device(model)
    if device.type == "cuda" and "rng.cuda" in tensors:  # a run resumed on another device draws
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)  # anew there (not bit for bit)
    counters: dict[str, Any] = meta["counters"]
    return counters
