"""Building the fused CPU kernels: a C++ extension built with torch's cpp_extension on first use.

When the extension cannot be built (no compiler, say) rnnlab falls back to the step-by-step path
with one line saying so; ``RNNLAB_NO_EXTENSION=1`` forces that fallback.

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

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = [
    _CSRC / name
    for name in (
        "module.cpp",
        "lstm.cpp",
        "gru.cpp",
        "scan.cpp",
        "gru_like.cpp",
        "spiking.cpp",
        "bru.cpp",
        "state_regularised.cpp",
    )
]


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


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the extension is (or can now be) built. Under torch.compile and torch.export this
    runs when the trace reaches it and is a constant of the trace: the build itself is never
    traced."""
    return extension() is not None


def unavailable_reason() -> str | None:
    extension()
    return _state["error"]
