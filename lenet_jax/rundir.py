"""One run directory, one writer: ``train.py`` holds a lock on ``<workdir>/.<name>.lock``
while it trains ``<workdir>/<name>``.

The lock is the operating system's (``filelock``: ``flock`` on Unix), so it dies with
its process, ``kill -9`` included; ``.<name>.owner`` names the process that holds it, for
the message a second writer gets and to say when a dead one's lock is taken over. The
lock sits beside the run directory, so ``--overwrite`` can delete the directory while
holding it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from lenet_jax.errors import UserError


class RunDirectoryError(UserError, RuntimeError):
    """The run directory's lock cannot be taken."""


class RunDirectoryBusyError(RunDirectoryError):
    """Another live process is training this run directory."""


@contextlib.contextmanager
def exclusive(run_dir: Path) -> Iterator[str | None]:
    """Hold ``run_dir``'s lock for the ``with`` block; yields a note when the last holder
    died without letting go. ``RunDirectoryBusyError`` at once, naming the holder, when
    another live process holds it."""
    run_dir = Path(run_dir)
    lock = FileLock(run_dir.parent / f".{run_dir.name}.lock")
    owner_file = run_dir.parent / f".{run_dir.name}.owner"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunDirectoryBusyError(f"run directory {run_dir} is being trained by "
                               f"{_read(owner_file) or 'another process'}; wait for it to "
                               "finish") from None
    except OSError as err:  # e.g. the lock file replaced by a directory
        raise RunDirectoryError(f"cannot lock run directory {run_dir} with {lock.lock_file}: "
                                f"{err.strerror or err}; remove it if no run is training") from None
    try:
        previous = _read(owner_file)  # left only by a holder that did not exit cleanly
        tmp = owner_file.with_name(f"{owner_file.name}.{os.getpid()}")
        # The owner's name is for messages only: a damaged file (a directory, say) stops
        # nothing.
        with contextlib.suppress(OSError):
            tmp.write_text(_me())
            os.replace(tmp, owner_file)
        yield f"taking over {run_dir} from {previous}, which is gone" if previous else None
    finally:
        with contextlib.suppress(OSError):
            owner_file.unlink(missing_ok=True)
        lock.release()


def _me() -> str:
    return f"process {os.getpid()} on {socket.gethostname()}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip() or None
    except OSError:
        return None
