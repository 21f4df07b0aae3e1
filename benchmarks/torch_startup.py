"""The PyTorch side of ``benchmarks/startup.py``: each job its CLI does, the way a
PyTorch script would do it, timed by phase. It never imports JAX or lenet_jax.

    python benchmarks/torch_startup.py train    PRESET_JSON ARRAYS.npz WORKDIR
    python benchmarks/torch_startup.py evaluate PRESET_JSON ARRAYS.npz WORKDIR
    python benchmarks/torch_startup.py image    PRESET_JSON IMAGE.png  WORKDIR
    python benchmarks/torch_startup.py export   PRESET_JSON -          WORKDIR

train: 10 steps of batch 64, then validation (5,000) and test (10,000) accuracy, and the
weights saved; evaluate: the weights, the 10,000 test images, accuracy and the
confusion matrix as JSON; image: one PNG, MNIST-sized, predicted; export:
``torch.export`` of the model, saved. Phase times go to ``$LENET_JAX_PHASES`` as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from contextlib import contextmanager
from pathlib import Path

PHASES: dict[str, float] = {}


@contextmanager
def phase(name: str):
    start = time.perf_counter()
    yield
    PHASES[name] = PHASES.get(name, 0.0) + time.perf_counter() - start


with phase("imports"):
    import numpy as np
    import torch
    import torch.nn.functional as F  # noqa: N812

    sys.path.insert(0, str(Path(__file__).parent))
    from torch_reference import TorchLeNet, to_nchw


def normalised(images: np.ndarray, preset) -> torch.Tensor:
    return to_nchw((images.astype(np.float32) / 255.0 - preset.mean) / preset.std)


def load(arrays: str):
    with np.load(arrays) as f:
        return {k: f[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}


def accuracy(model, images: torch.Tensor, labels: np.ndarray) -> tuple[float, np.ndarray]:
    with torch.no_grad():
        predictions = torch.cat([model(images[i:i + 1000]).argmax(1)
                                 for i in range(0, len(images), 1000)]).numpy()
    return float(np.mean(predictions == labels)), predictions


def train(preset, arrays: str, workdir: Path) -> None:
    with phase("data"):
        d = load(arrays)
    with phase("init"):
        torch.manual_seed(0)
        model = TorchLeNet(preset)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with phase("work"):
        images = normalised(d["train_images"][:640], preset)
        labels = torch.from_numpy(d["train_labels"][:640].astype(np.int64))
        for step in range(10):
            optimizer.zero_grad()
            index = slice(64 * step, 64 * (step + 1))
            F.cross_entropy(model(images[index]), labels[index]).backward()
            optimizer.step()
        model.eval()
        accuracy(model, normalised(d["train_images"][55_000:], preset), d["train_labels"][55_000:])
        accuracy(model, normalised(d["test_images"], preset), d["test_labels"])
    with phase("save"):
        torch.save(model.state_dict(), workdir / "torch_weights.pt")


def restored(preset, workdir: Path):
    model = TorchLeNet(preset)
    model.load_state_dict(torch.load(workdir / "torch_weights.pt"))
    return model.eval()


def evaluate(preset, arrays: str, workdir: Path) -> None:
    with phase("init"):
        model = restored(preset, workdir)
    with phase("data"):
        d = load(arrays)
    with phase("work"):
        acc, predictions = accuracy(model, normalised(d["test_images"], preset), d["test_labels"])
        confusion = np.bincount(d["test_labels"] * 10 + predictions, minlength=100)
    with phase("save"):
        (workdir / "torch_metrics.json").write_text(json.dumps(
            {"accuracy": acc, "confusion_matrix": confusion.reshape(10, 10).tolist()}))


def image(preset, path: str, workdir: Path) -> None:
    from PIL import Image

    with phase("init"):
        model = restored(preset, workdir)
    with phase("work"):
        gray = Image.open(path).convert("L").resize((28, 28))
        pixels = 255 - np.asarray(gray, np.uint8)[None, :, :, None]
        with torch.no_grad():
            probabilities = model(normalised(pixels, preset)).softmax(1)[0]
        print(path, int(probabilities.argmax()), f"{float(probabilities.max()):.3f}")


def export(preset, _: str, workdir: Path) -> None:
    with phase("init"):
        model = restored(preset, workdir)
    with phase("work"):
        example = torch.zeros(1, 1, preset.input_size, preset.input_size)
        program = torch.export.export(model, (example,))
    with phase("save"):
        torch.export.save(program, workdir / "torch_model.pt2")


def main() -> int:
    mode, preset_json, path, workdir = sys.argv[1:5]
    preset = types.SimpleNamespace(**json.loads(preset_json))
    torch.set_num_threads(os.cpu_count() or 1)
    {"train": train, "evaluate": evaluate, "image": image, "export": export}[mode](
        preset, path, Path(workdir))
    if out := os.environ.get("LENET_JAX_PHASES"):
        Path(out).write_text(json.dumps(PHASES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
