"""Process set-up for the command-line tools: JAX's persistent compilation cache, and
per-phase timings that ``benchmarks/startup.py`` reads.

The compilation cache lives in ``~/.cache/lenet_jax/xla`` (under ``$LENET_JAX_CACHE``
when set); ``LENET_JAX_COMPILATION_CACHE=off`` turns it off and a path moves it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from lenet_jax.data import default_cache_dir

COMPILATION_CACHE_ENV = "LENET_JAX_COMPILATION_CACHE"
PHASES_ENV = "LENET_JAX_PHASES"  # a JSON file that receives the phase timings at exit

_phases: dict[str, float] = {}


def compilation_cache_dir() -> Path | None:
    """Where compiled XLA programs are kept between runs; None when turned off."""
    setting = os.environ.get(COMPILATION_CACHE_ENV, "")
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    return Path(setting).expanduser() if setting else default_cache_dir() / "xla"


def enable_compilation_cache() -> Path | None:
    """Keep every compiled program on disk, however small or quick to compile (JAX's
    defaults skip those compiled in under 1 s)."""
    import jax

    directory = compilation_cache_dir()
    if directory is not None and (problem := _unusable(directory)):
        # A speed-up: without it every program is compiled anew, and the work goes on.
        print(f"note: the compilation cache cannot be used ({problem}: {directory}); "
              "compiling anew each time", file=sys.stderr)
        return None
    if directory is not None:
        # An entry that cannot be read or written (a full disk, say) costs a compile, not
        # a warning on the terminal for every program.
        warnings.filterwarnings("ignore", message=r"Error (reading|writing) persistent "
                                                  "compilation cache entry")
        jax.config.update("jax_compilation_cache_dir", os.fspath(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def _unusable(directory: Path) -> str | None:
    """Why ``directory`` cannot keep compiled programs, or None."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as err:
        return err.strerror or str(err)
    return None


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the time spent inside to phase ``name`` (written out only when
    ``$LENET_JAX_PHASES`` names a file)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _phases[name] = _phases.get(name, 0.0) + time.perf_counter() - start


def _write_phases() -> None:
    if path := os.environ.get(PHASES_ENV):
        Path(path).write_text(json.dumps(_phases))


atexit.register(_write_phases)
