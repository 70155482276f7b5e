"""What rnnlab draws on a terminal: progress bars only where stderr is one (a file or a pipe gets
no carriage-return redraws), cleared when done."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def interactive() -> bool:
    """Whether progress bars make sense: stderr is a terminal."""
    return sys.stderr.isatty()


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """``items`` with a bar on a terminal (for long evaluations), plain elsewhere."""
    if not interactive():
        yield from items
        return
    yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
