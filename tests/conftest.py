import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lenet_jax.data import Dataset, Split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_split(n: int, seed: int) -> Split:
    """Learnable digits-like images: class k is a bright 4x12 bar at a class-specific
    place, on noise, so a LeNet separates them within a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = rng.integers(0, 60, (n, 28, 28, 1)).astype(np.uint8)
    for i, k in enumerate(labels):
        row, col = 4 + 2 * (k // 5) * 5, 2 + 5 * (k % 5)
        images[i, row:row + 12, col:col + 4] = 255
    return Split(images, labels)


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    return Dataset("mnist", make_split(704, 0), make_split(200, 1), tuple("0123456789"))


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a top-level script of the project as a user would."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd or ROOT, capture_output=True, text=True,
        timeout=timeout, env=env,
    )
