"""Writing a file whole or not at all: what the tools write (pictures, reports, caches,
exported models) never lies half-written under its name after a Ctrl-C, a crash or a
full disk."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | os.PathLike, sync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, hidden) to write; when the
    block ends without an error it becomes ``path`` in one rename (flushed to the disk
    first with ``sync``, so that a crash cannot leave the name on an empty file), and
    otherwise it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem[:80]}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        if sync:
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
