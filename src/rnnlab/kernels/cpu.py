"""The fused CPU backend: a C++ extension built with torch's cpp_extension on first use.

The extension runs the whole time loop of a layer in C++: one recurrent matrix product per step
and the gate arithmetic of the step fused into one pass; its backward keeps only the recurrent
product in the loop and computes the weight gradients after it as single large products. When the
extension cannot be built (no compiler, say) rnnlab falls back to the step-by-step path with a
warning; ``RNNLAB_NO_EXTENSION=1`` forces that fallback.

The build is keyed by what it is built from: a digest of every source and header, the compiler
flags, torch's and Python's versions and torch's installation goes into the extension's name, and
so into its cache directory; the sources are compiled from a copy inside that directory, so the
build's command lines are the same whichever checkout asks. Two checkouts, versions or virtual
environments on one machine therefore never rebuild each other's kernels, and checkouts with
identical sources in one environment share one build. A build announces itself on stderr in one
line (what, where, and then how long it took); ``rnnlab train`` builds before its first epoch, so
the build is not counted as training time.

torch guards its build directory with a ``lock`` file that a process killed inside ``load`` leaves
behind, and every later process then waits on it forever. rnnlab holds its own ``flock`` (which
the kernel releases when a process dies) around ``load``: whoever holds it is the only rnnlab
process inside ``load``, so a ``lock`` file it finds there is stale and is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = [_CSRC / name for name in ("module.cpp", "lstm.cpp", "gru.cpp", "scan.cpp")]


# Built where it runs, so -march=native is safe; -ffast-math lets the gate loops use glibc's
# vector exp and tanh. -fopenmp makes at::parallel_for parallel (it is serial code without
# _OPENMP); the GOMP symbols resolve to the libgomp that libtorch_cpu has already loaded, so no
# second OpenMP runtime is linked in.
_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]


def build_key() -> str:
    """A digest of everything the extension is built from: sources, headers, flags, the
    versions of torch and Python, the machine's architecture, and where torch is installed (its
    headers and libraries are paths in the build's command lines: two environments sharing one
    build directory would each find the other's commands changed and recompile everything)."""
    digest = hashlib.sha256()
    for path in sorted([*_SOURCES, *_CSRC.glob("*.h")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    context = [*_FLAGS, torch.__version__, sys.version, platform.machine(),
               str(Path(torch.__file__).resolve().parent)]  # fmt: skip
    digest.update("\0".join(context).encode())
    return digest.hexdigest()[:12]


_state: dict[str, Any] = {"module": None, "error": None}


def extension_name() -> str:
    return f"rnnlab_cpu_kernels_{build_key()}"


def build_directory() -> Path:
    """Where torch builds the extension: $TORCH_EXTENSIONS_DIR/NAME, or torch's default cache
    directory for this Python and build of torch; NAME carries the build key."""
    from torch.utils import cpp_extension

    name = extension_name()
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is not None:
        return Path(root) / name
    find = getattr(cpp_extension, "_get_build_directory", None)
    if find is not None:
        return Path(find(name, False))
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_cpu"
    return Path(cpp_extension.get_default_build_root()) / tag / name


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` for the block (none where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own lock file is all there is
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_lock(lock: Path) -> None:
    """torch's lock file, found while holding rnnlab's flock, was left by a dead process."""
    if lock.exists():
        warnings.warn(
            f"rnnlab: removing {lock}, left by a process killed while it built or loaded the "
            "fused CPU backend",
            RuntimeWarning,
            stacklevel=3,
        )
        lock.unlink(missing_ok=True)


def extension() -> ModuleType | None:
    """The compiled extension, building it on first use; None where it cannot be built."""
    if _state["module"] is not None or _state["error"] is not None:
        return _state["module"]
    if os.environ.get("RNNLAB_NO_EXTENSION"):
        _state["error"] = "disabled by RNNLAB_NO_EXTENSION"
        return None
    try:
        from torch.utils.cpp_extension import load

        name, build = extension_name(), build_directory()
        build.mkdir(parents=True, exist_ok=True)
        with _exclusive(build / "rnnlab.flock"):
            _remove_stale_lock(build / "lock")
            sources = _stage_sources(build / "src")
            fresh = not (build / f"{name}.so").is_file()
            if fresh:
                _say(f"building the fused CPU kernels once for this version (about a minute; "
                     f"cached in {build})")  # fmt: skip
            start = time.perf_counter()
            _state["module"] = load(name=name, sources=[str(s) for s in sources],
                                    extra_cflags=_FLAGS, build_directory=str(build),
                                    verbose=False)  # fmt: skip
            if fresh:
                _say(f"built the fused CPU kernels in {time.perf_counter() - start:.0f} s")
    except Exception as exc:  # a missing compiler or headers: fall back, saying so once
        _state["error"] = f"{type(exc).__name__}: {exc}"
        reason = " ".join(str(_state["error"]).split())[:200]
        _say(f"the fused CPU kernels could not be built ({reason}); the step loop is used")
    return _state["module"]


def _stage_sources(where: Path) -> list[Path]:
    """Copy the sources and headers into the build directory and compile them from there: the
    build files then name the same paths whichever checkout asks, so a second checkout with the
    same sources (the same key) finds the build done rather than recompiling every file because
    its paths differ."""
    where.mkdir(parents=True, exist_ok=True)
    for path in [*_SOURCES, *_CSRC.glob("*.h")]:
        target = where / path.name
        blob = path.read_bytes()
        if not target.is_file() or target.read_bytes() != blob:
            target.write_bytes(blob)
    return [where / path.name for path in _SOURCES]


def _say(line: str) -> None:
    """One line on stderr: a build is the one thing rnnlab's library announces by itself."""
    print(f"rnnlab: {line}", file=sys.stderr, flush=True)


def unavailable_reason() -> str | None:
    extension()
    return _state["error"]


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


def lstm_sequence(
    x_proj: Tensor,
    weight_hh: Tensor,
    peephole: Tensor | None,
    weight_gg: Tensor | None,
    state: tuple[Tensor, ...],
    valid: Tensor | None,
    rmask: Tensor | None,
    layout: list[int],
    flags: list[int],
    zone: Tensor | None = None,
    layer_norm: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run one layer and direction: x_proj (T, B, G*H), state (y0, c0[, a0]); valid (T, B) bool;
    zone (T, B, 2H) the zoneout keep masks of y and c (or their expectation p in evaluation);
    layer_norm the gains (g_hh (G*H), g_c (H)) and bias b_c (H) of LN(R y) and LN(c) (x_proj
    then already holds LN(W x)). Returns the outputs (T, B, H) and the final state."""
    e = _empty(x_proj)
    ln = (e, e, e) if layer_norm is None else layer_norm
    args = (
        x_proj,
        weight_hh,
        e if peephole is None else peephole,
        e if weight_gg is None else weight_gg,
        state[0],
        state[1],
        state[2] if len(state) > 2 else e,
        e if valid is None else valid,
        e if rmask is None else rmask,
        e if zone is None else zone,
        *ln,
    )
    save = _needs_grad(*args)  # inference saves no activations
    Y, yT, cT, aT = torch.ops.rnnlab.lstm_forward(*args, layout, flags, save)[:4]
    final = (yT, cT, aT) if len(state) > 2 else (yT, cT)
    return Y, final


def _inputs(x_proj: Tensor, valid: Tensor | None, rmask: Tensor | None) -> tuple[Tensor, Tensor]:
    e = _empty(x_proj)
    return (e if valid is None else valid), (e if rmask is None else rmask)


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# The kernels as torch operators (torch.ops.rnnlab.*): registered on import, built on first call.
from rnnlab.kernels import ops as _ops  # noqa: E402, F401


def gru_sequence(
    x_proj: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    h0: Tensor,
    valid: Tensor | None,
    rmask: Tensor | None,
    v1: bool,
    zone: Tensor | None = None,
    ln_hh: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer and direction of a GRU: x_proj (T, B, 3H) -> outputs (T, B, H), (h_T,);
    zone (T, B, H) the zoneout keep masks (or p in evaluation); ln_hh (3H) the gains of the
    recurrent products' layer norm (x_proj then already holds LN(W x))."""
    valid_t, rmask_t = _inputs(x_proj, valid, rmask)
    b_hh = _empty(x_proj) if bias_hh is None else bias_hh
    z = _empty(x_proj) if zone is None else zone
    g = _empty(x_proj) if ln_hh is None else ln_hh
    args = (x_proj, weight_hh, b_hh, h0, valid_t, rmask_t, z, g)
    save = _needs_grad(x_proj, weight_hh, b_hh, h0, g)
    Y, hT = torch.ops.rnnlab.gru_forward(*args, v1, save)[:2]
    return Y, (hT,)


def tanh_sequence(
    x_proj: Tensor,
    weight_hh: Tensor,
    h0: Tensor,
    valid: Tensor | None,
    rmask: Tensor | None,
    zone: Tensor | None = None,
    ln_hh: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer and direction of the tanh RNN: x_proj (T, B, H) -> outputs, (h_T,); ln_hh (H)
    the gain of LN(R h) (x_proj then already holds LN(W x))."""
    valid_t, rmask_t = _inputs(x_proj, valid, rmask)
    z = _empty(x_proj) if zone is None else zone
    g = _empty(x_proj) if ln_hh is None else ln_hh
    args = (x_proj, weight_hh, h0, valid_t, rmask_t, z, g)
    Y, hT = torch.ops.rnnlab.tanh_forward(*args, _needs_grad(x_proj, weight_hh, h0, g))[:2]
    return Y, (hT,)


def gated_scan(
    x_proj: Tensor, h0: Tensor, valid: Tensor | None, kind: int
) -> tuple[Tensor, Tensor]:
    """All states of minGRU (kind 0) or minLSTM (kind 1): x_proj (T, B, G*H), h0 (B, H), valid
    (T, B) bool or None. Returns (h (T, B, H), h_T); h carries the state over padded steps."""
    v = _empty(x_proj) if valid is None else valid
    H, hT = torch.ops.rnnlab.gated_scan_forward(x_proj, h0, v, kind)
    return H, hT
