"""Judging a trained model: accuracy, confusion matrix, per-class precision / recall / F1,
the most confused pairs, pictures of them, and predictions on a user's own images."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image, ImageOps

from lenet_jax import files, inference, ink, models, rejection
from lenet_jax.errors import UserError

# Larger than any camera's photo; and what a picture may take once decoded (JPEGs decode
# at a reduced scale first), so that two decoding at once stay far under 1 GB.
PIXEL_BUDGET = 50_000_000
DECODED_BYTE_BUDGET = 128 << 20
# A picture is shrunk (box filter, in its own mode) to at most this side before any
# arithmetic on it: a digit ends up 20 pixels high, so nothing is lost.
READ_SIDE = 2048
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2,
                    "I;16B": 2, "I;16L": 2, "RGB": 3, "YCbCr": 3}  # others: 4
_REDUCIBLE = {"L", "LA", "La", "PA", "RGB", "RGBA", "RGBa", "I", "F", "CMYK", "YCbCr"}


@dataclasses.dataclass(frozen=True)
class Report:
    class_names: tuple[str, ...]
    labels: np.ndarray  # int (N,)
    predictions: np.ndarray  # int (N,)
    probabilities: np.ndarray  # float (N, classes)
    rejected: np.ndarray | None = None  # bool (N,): "not a digit"; None: no rule
    non_digits: dict[str, float] | None = None  # the share of non-digits rejected, by kind

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.labels, self.predictions, len(self.class_names))

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.labels == self.predictions))

    @property
    def errors(self) -> int:
        return int(np.sum(self.labels != self.predictions))

    def to_json(self) -> dict:
        cm = self.confusion
        return {
            "accuracy": self.accuracy,
            "errors": self.errors,
            "examples": len(self.labels),
            "class_names": list(self.class_names),
            "per_class": per_class_metrics(cm, self.class_names),
            "confusion_matrix": cm.tolist(),
            "most_confused": [
                {"true": self.class_names[t], "predicted": self.class_names[p], "count": c}
                for t, p, c in most_confused(cm)
            ],
            "rejected": None if self.rejected is None else float(self.rejected.mean()),
            "non_digits_rejected": self.non_digits,
        }


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """cm[t, p] = how many examples of class t were predicted as p."""
    flat = np.asarray(labels, np.int64) * classes + np.asarray(predictions, np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def per_class_metrics(cm: np.ndarray, class_names: tuple[str, ...]) -> list[dict]:
    true_positive = np.diag(cm).astype(float)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    rows = []
    for k, name in enumerate(class_names):
        precision = true_positive[k] / predicted[k] if predicted[k] else 0.0
        recall = true_positive[k] / support[k] if support[k] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1,
                     "support": int(support[k])})
    return rows


def most_confused(cm: np.ndarray, top: int = 5) -> list[tuple[int, int, int]]:
    """The largest off-diagonal cells as (true, predicted, count), largest first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    cells = [(int(i // cm.shape[1]), int(i % cm.shape[1])) for i in order]
    return [(t, p, int(off[t, p])) for t, p in cells if off[t, p] > 0]


def run(module: models.LeNet, params, images: np.ndarray, labels: np.ndarray,
        class_names: tuple[str, ...], batch_size: int | None = None,
        rule: rejection.Rule | None = None, non_digits: bool = False) -> Report:
    """Predict a whole split in one compiled call; with ``rule``, also how many of its
    images it rejects, and with ``non_digits`` how many of
    ``rejection.non_digit_pictures``."""
    on_device = jax.numpy.asarray(images)
    if rule is None:
        logits = inference.predict_logits(module, params, on_device, batch_size)
        rejected = None
    else:
        logits, statistics = inference.predict_with_statistics(module, params, on_device,
                                                               batch_size)
        rejected = rule.rejects(np.asarray(logits), np.asarray(statistics), np.asarray(images))
    probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
    non_digits = (non_digit_rejection(module, params, rule)
                  if rule is not None and non_digits else None)
    return Report(tuple(class_names), np.asarray(labels), probabilities.argmax(-1),
                  probabilities, rejected, non_digits)


def non_digit_rejection(module: models.LeNet, params, rule: rejection.Rule) -> dict[str, float]:
    """The share of ``rejection.non_digit_pictures`` that are refused, by kind and in
    all; a picture the reader finds blank counts as refused."""
    kinds, images = read_non_digits()
    read = np.array([image is not None for image in images])
    pictures = np.stack([i for i in images if i is not None])
    logits, statistics = inference.predict_images(module, params, pictures, statistics=True)
    refused = ~read
    refused[read] = rule.rejects(logits, statistics, pictures)
    shares = {kind: float(refused[kinds == kind].mean()) for kind in dict.fromkeys(kinds)}
    return shares | {"all": float(refused.mean())}


def read_non_digits() -> tuple[np.ndarray, list[np.ndarray | None]]:
    """(kinds, each of ``rejection.non_digit_pictures`` through the image reader as a PNG
    file would go, or None where the reader refuses it)."""
    kinds, images = [], []
    for kind, picture in rejection.non_digit_pictures():
        encoded = io.BytesIO()
        picture.save(encoded, "PNG")
        kinds.append(kind)
        try:
            images.append(mnist_like(encoded.getvalue()))
        except ImageError:
            images.append(None)
    return np.array(kinds), images


def format_report(report: Report) -> str:
    """The terminal report: accuracy, confusion table, per-class metrics, confused pairs."""
    cm, names = report.confusion, report.class_names
    width = max(5, max(len(n) for n in names) + 1, len(str(cm.max())) + 1)
    label_width = max(len(n) for n in names) + 2
    lines = [f"accuracy {100 * report.accuracy:.2f}% ({report.errors} errors / "
             f"{len(report.labels)})", "", "confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * label_width + "".join(f"{n[:width - 1]:>{width}}" for n in names))
    for name, row in zip(names, cm, strict=True):
        lines.append(f"{name:>{label_width - 1}} " + "".join(f"{v:>{width}d}" for v in row))
    lines += ["", f"{'class':>{label_width - 1}}  precision  recall      f1  support"]
    for row in per_class_metrics(cm, names):
        lines.append(f"{row['class']:>{label_width - 1}}  {row['precision']:9.4f}  "
                     f"{row['recall']:6.4f}  {row['f1']:6.4f}  {row['support']:7d}")
    pairs = most_confused(cm)
    if pairs:
        lines += ["", "most confused: " + ", ".join(f"{names[t]}→{names[p]}: {c}"
                                                    for t, p, c in pairs)]
    return "\n".join(lines + ["", rejection_line(report)])


def rejection_line(report: Report) -> str:
    if report.rejected is None:
        return "not a digit: this checkpoint carries no rejection rule"
    line = (f"not a digit: {100 * report.rejected.mean():.2f}% of these {len(report.labels)} "
            "images rejected")
    if report.non_digits is None:
        return line
    by_kind = ", ".join(f"{kind} {100 * share:.0f}%" for kind, share in report.non_digits.items()
                        if kind != "all")
    return f"{line}; {100 * report.non_digits['all']:.1f}% of the generated non-digits ({by_kind})"


def save_outputs(report: Report, images: np.ndarray, out_dir: Path,
                 normalise: bool = False) -> list[Path]:
    """metrics.json, confusion_matrix.png and misclassified.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    with files.replacing(metrics_path) as tmp:
        tmp.write_text(json.dumps(report.to_json(), indent=2))
    return [metrics_path, plot_confusion(report, out_dir / "confusion_matrix.png", normalise),
            plot_misclassified(report, images, out_dir / "misclassified.png")]


def plot_confusion(report: Report, path: Path, normalise: bool = False) -> Path:
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure  # not pyplot: files only, and quicker to import

    cm = report.confusion.astype(float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalise else cm
    names = report.class_names
    fig = Figure(figsize=(8, 7))
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues", norm=PowerNorm(0.3))
    fig.colorbar(image, ax=ax, fraction=0.046)
    for t in range(len(names)):
        for p in range(len(names)):
            text = f"{shown[t, p]:.2f}" if normalise else f"{int(cm[t, p])}"
            light = shown[t, p] > 0.5 * shown.max()
            ax.text(p, t, text, ha="center", va="center", fontsize=7,
                    color="white" if light else "black")
    ax.set_xticks(range(len(names)), names, rotation=45 if max(map(len, names)) > 2 else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"{'row-normalised ' if normalise else ''}confusion matrix — accuracy "
                 f"{100 * report.accuracy:.2f}%")
    fig.tight_layout()
    with files.replacing(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path


def plot_misclassified(report: Report, images: np.ndarray, path: Path, count: int = 36) -> Path:
    """The most confident errors first, with true and predicted labels: one mosaic
    image, each tile captioned (one axes, not one per image: quicker to draw; RESULTS.md)."""
    from matplotlib.figure import Figure

    wrong = np.flatnonzero(report.labels != report.predictions)
    confidence = report.probabilities[wrong, report.predictions[wrong]]
    worst = wrong[np.argsort(-confidence, kind="stable")][:count]
    columns, side, caption = 6, images.shape[1], 14  # caption: pixels of text above a tile
    rows = max(1, int(np.ceil(len(worst) / columns)))
    tile = side + caption
    mosaic = np.full((rows * tile, columns * (side + 4)), 255, np.uint8)  # white margins
    fig = Figure(figsize=(columns * 1.6, rows * 1.8 + 0.4))
    ax = fig.subplots()
    names = report.class_names
    for n, i in enumerate(worst):
        top, left = (n // columns) * tile + caption, (n % columns) * (side + 4)
        mosaic[top:top + side, left:left + side] = images[i, ..., 0]
        p = report.predictions[i]
        ax.text(left + side / 2, top - 1, f"true {names[report.labels[i]]}\npred {names[p]} "
                f"{100 * report.probabilities[i, p]:.0f}%", ha="center", va="bottom", fontsize=8)
    ax.imshow(mosaic, cmap="gray", interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{len(wrong)} misclassified; the {len(worst)} most confident shown")
    fig.tight_layout()
    with files.replacing(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return path


class ImageError(UserError, ValueError):
    """A file that cannot be read as an image."""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The files named and the PNG/JPEG files inside the directories named (sorted), and
    a problem for each path that gives none."""
    files, problems = [], []
    for path in map(Path, paths):
        try:
            if not stat.S_ISDIR(path.stat().st_mode):
                files.append(path)
                continue
            inside = sorted(p for p in path.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(p))
        except OSError as err:  # missing, unreadable, a name too long, a loop of links
            problems.append(f"{path}: {(err.strerror or str(err)).lower()}")
            continue
        files += inside
        if not inside:
            problems.append(f"{path}: a directory with no PNG or JPEG files in it")
    return files, problems


def read_pictures(paths: list[str], convert: Callable[[Path], Any]
                  ) -> tuple[list[Path], list, list[str]]:
    """(the files read, ``convert`` of each, a problem for each path or file that could
    not be): ``image_files``, each file through ``convert`` (``mnist_like``,
    ``number_strip``), an ``ImageError`` a problem and not the end."""
    files, problems = image_files(paths)
    read, pictures = [], []
    for file in files:
        try:
            pictures.append(convert(file))
            read.append(file)
        except ImageError as err:
            problems.append(str(err))
    return read, pictures, problems


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the model says about one picture: its top classes, and whether the
    rejection rule calls it "not a digit" (None: the checkpoint has no rule)."""
    top: list[tuple[str, float]]
    rejected: bool | None

    def to_json(self) -> dict:
        return {"top3": [{"class": n, "probability": p} for n, p in self.top],
                "rejected": self.rejected}

    def __str__(self) -> str:
        if self.rejected:
            return f"not a digit (closest: {self.top[0][0]}, {100 * self.top[0][1]:.0f}%)"
        return ", ".join(f"{n} {100 * p:.1f}%" for n, p in self.top)


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A checkpoint ready to answer about pictures: ``evaluate.py --image`` and
    ``lenet_jax.serve`` both ask this."""
    module: models.LeNet
    params: Any
    metadata: dict
    rule: rejection.Rule | None
    source: str  # where it came from, as a person reads it
    step_dir: Path | None = None  # the checkpoint's step directory; None: shipped weights

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        """From a checkpoint path (see ``checkpoint.resolve_step``); a damaged one raises
        ``CheckpointError``."""
        from lenet_jax import checkpoint

        manager_dir, step = checkpoint.resolve_step(path)
        params, metadata = checkpoint.restore_for_inference(manager_dir / str(step))
        try:
            rule = rejection.from_metadata(metadata)
        except rejection.RuleError as err:
            raise checkpoint.CheckpointError(f"{manager_dir / str(step)}: {err}") from None
        module, _ = models.create_model(metadata["preset"])
        return cls(module, params, metadata, rule, str(manager_dir / str(step)),
                   manager_dir / str(step))

    @classmethod
    def pretrained(cls, preset: str, dataset: str = "mnist") -> Predictor:
        """From the weights shipped in the package (``lenet_jax.zoo``)."""
        from lenet_jax import zoo

        module, params, metadata = zoo.pretrained(preset, dataset)
        return cls(module, params, metadata, rejection.from_metadata(metadata),
                   f"pretrained {dataset}/{preset} (lenet-jax)")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["class_names"])

    def answer(self, images: np.ndarray) -> list[Answer]:
        """One answer per uint8 image (N, 28, 28, 1), all in one compiled call."""
        logits, statistics = inference.predict_images(
            self.module, self.params, images,
            statistics=self.rule is not None and self.rule.needs_statistics)
        probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
        rejected = (self.rule.rejects(logits, statistics, images).tolist() if self.rule is not None
                    else [None] * len(images))
        return [Answer(top_k(p, self.class_names), r)
                for p, r in zip(probabilities, rejected, strict=True)]


def mnist_like(source: str | Path | bytes) -> np.ndarray:
    """A user's picture of a digit (a file, or its bytes) as MNIST would have it: uint8
    (28, 28, 1), white on black.

    Its gray levels, upright as its EXIF says it is shown, through ``ink.mnist_digit``:
    a light background inverted, the ink cropped, given MNIST's contrast and (where its
    strokes are unlike MNIST's) MNIST's pen, fitted to 20x20 and centred by mass in 28x28.
    """
    path = "the image" if isinstance(source, bytes) else source
    digit = ink.mnist_digit(_gray_pixels(source, path))
    if digit is None:
        raise ImageError(f"{path}: no digit found (the image is blank)")
    return digit


def number_strip(source: str | Path | bytes) -> ink.Strip:
    """A user's picture of a written number (a file, or its bytes) as a strip the swept
    network reads (``ink.mnist_strip``): 32 pixels high, white on black."""
    path = "the image" if isinstance(source, bytes) else source
    strip = ink.mnist_strip(_gray_pixels(source, path), models.SWEEP_STEP)
    if strip is None:
        raise ImageError(f"{path}: no number found (the image is blank, or its ink is a "
                         f"line over {ink.MOST_STRIP_DIGITS} digits wide)")
    return strip


def _gray_pixels(source: str | Path | bytes, path: str | Path) -> np.ndarray:
    """The picture's gray levels, upright as its EXIF says it is shown, as float32
    (H, W) in [0, 255]; ``ImageError`` if it cannot be read."""
    if not isinstance(source, bytes) and not os.path.isfile(source):
        # a FIFO, a socket or a device exists but has no picture to read (a FIFO would
        # block the reader until something writes to it)
        raise ImageError(f"{path}: " + ("not a regular file" if os.path.exists(source)
                                         else "no such file"))
    try:
        with warnings.catch_warnings(action="ignore"):  # Pillow's notes on damaged files
            return _decode(io.BytesIO(source) if isinstance(source, bytes) else source, path)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own limit, at twice ~89 MP
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        raise ImageError(_over_budget(path, int(pixels.group(1)) if pixels else None)) from None
    except Exception as err:  # a decoder meeting damaged bytes may raise anything
        raise ImageError(f"{path}: not a readable image ({type(err).__name__})") from None


def _decode(source: Any, path: str | Path) -> np.ndarray:
    with Image.open(source) as picture:
        _check_budget(picture, path)
        picture.load()
        if picture.getexif().get(ORIENTATION, 1) != 1:
            picture = ImageOps.exif_transpose(picture)
        factor = -(-max(picture.size) // READ_SIDE)
        if factor == 1:
            return _gray(picture)
        if picture.mode in _REDUCIBLE:
            return _gray(picture.reduce(factor))
        return _gray(Image.fromarray(_gray(picture), "F").reduce(factor))


def _gray(picture: Image.Image) -> np.ndarray:
    """Gray levels in [0, 255] of any mode: 16-bit and float scaled, transparency white."""
    if picture.mode.startswith("I;16"):
        return np.asarray(picture, np.float32) * (255 / 65535)
    if picture.mode in ("I", "F"):
        values = np.nan_to_num(np.asarray(picture, np.float32), nan=0, posinf=0, neginf=0)
        high = values.max(initial=0)
        return np.clip(values * (255 / high if high > 255 else 1), 0, 255)
    if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
        return np.asarray(_flatten_alpha(picture.convert("RGBA")), np.float32)
    return np.asarray(picture.convert("L"), np.float32)


ORIENTATION = 0x0112  # the EXIF tag


def _check_budget(picture: Image.Image, path: str | Path) -> None:
    """Refuse, from its header and before decoding it, a picture over ``PIXEL_BUDGET``
    or one that would decode to more than ``DECODED_BYTE_BUDGET`` (a JPEG is set to
    decode at the smallest scale that keeps ``READ_SIDE``: its draft mode)."""
    width, height = picture.size
    if width * height > PIXEL_BUDGET:
        raise ImageError(_over_budget(path, width * height))
    picture.draft("L", (READ_SIDE, READ_SIDE))  # JPEG only; others are left as they are
    width, height = picture.size
    per_pixel = _BYTES_PER_PIXEL.get(picture.mode, 4)
    if picture.mode not in _REDUCIBLE and max(width, height) > READ_SIDE:
        per_pixel += 4  # read as float gray levels before shrinking
    if width * height * per_pixel > DECODED_BYTE_BUDGET:
        raise ImageError(f"{path}: {width:,} x {height:,} {picture.mode} pixels would take "
                         f"{width * height * per_pixel >> 20} MiB decoded; the budget is "
                         f"{DECODED_BYTE_BUDGET >> 20} MiB")


def _over_budget(path: str | Path, pixels: int | None) -> str:
    size = f"{pixels:,} pixels" if pixels else "the picture"
    return f"{path}: {size} is over the budget of {PIXEL_BUDGET // 1_000_000} megapixels"


def _flatten_alpha(picture: Image.Image) -> Image.Image:
    # Transparent pixels are background: composite onto white.
    background = Image.new("RGBA", picture.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, picture).convert("L")


def top_k(probabilities: np.ndarray, class_names: tuple[str, ...], k: int = 3) -> list:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(class_names[i], float(probabilities[i])) for i in order]
