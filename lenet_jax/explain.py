"""What LeNet-5 sees: the preprocessed input, C1's, S2's, C3's and S4's feature maps,
F6's 84 values and the output probabilities of one image, in one figure.

The values come from the model itself: ``LeNet`` keeps each layer's output in its
"maps" collection when asked (``LeNet.keep_map``); nothing here recomputes a layer. For
``original``, F6 is drawn as the paper draws it (Fig. 3): a 7 x 12 grid, beside the RBF
code it lies closest to.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lenet_jax import files, inference, models

CODE_SHAPE = (12, 7)  # the RBF codes' bitmaps: 12 rows of 7 (models._DIGIT_BITMAPS)
MAP_LAYERS = models.MAP_LAYERS


@functools.partial(jax.jit, static_argnames="module")
def _apply_keeping_maps(module: models.LeNet, params: Any, images: jax.Array):
    logits, maps = inference.forward(module, params, images, keep_maps=True)
    return models.preprocess(images, module.preset), logits, maps


def panels(module: models.LeNet, params: Any, image: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays the figure draws for one uint8 (28, 28, 1) image, by panel title."""
    x, logits, layers = jax.device_get(_apply_keeping_maps(module, params,
                                                           jnp.asarray(image[None])))
    drawn = {"input": x[0, ..., 0]}
    drawn |= {layer: layers[layer][0] for layer in MAP_LAYERS}
    drawn["F6"] = layers["F6"][0]
    if module.preset.head == "rbf":
        closest = int(np.argmax(logits[0]))  # logits are -scale * squared distance
        drawn["F6"] = drawn["F6"].reshape(CODE_SHAPE)
        drawn[f"closest RBF code: {closest}"] = models.rbf_codes()[closest].reshape(CODE_SHAPE)
    drawn["probabilities"] = np.asarray(jax.nn.softmax(logits[0]))
    return drawn


def plot(drawn: dict[str, np.ndarray], class_names: tuple[str, ...], path: Path,
         title: str) -> Path:
    """The input, F6 (beside its closest code for ``original``) and the labelled outputs
    on top; below, a row per map layer (C1 and S2 share one). ``title`` should carry the
    verdict (``verdict``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6.4), layout="constrained")
    grid = fig.add_gridspec(4, 16, height_ratios=[2.6, 1, 1, 1])
    _image(fig.add_subplot(grid[0, 0:3]), drawn["input"], "input (as the network sees it)")
    codes = [name for name in drawn if name.startswith("closest")]
    _f6(fig, grid, drawn["F6"], codes and (codes[0], drawn[codes[0]]))
    _outputs(fig.add_subplot(grid[0, 9:16]), drawn["probabilities"], class_names)
    rows = {"C1": (1, 0), "S2": (1, 8), "C3": (2, 0), "S4": (3, 0)}
    for layer in MAP_LAYERS:
        row, first = rows[layer]
        maps = drawn[layer]
        for channel in range(maps.shape[-1]):
            name = (f"{layer}: {maps.shape[-1]} maps of {maps.shape[0]}x{maps.shape[1]}"
                    if channel == 0 else "")
            _image(fig.add_subplot(grid[row, first + channel]), maps[..., channel], name,
                   loc="left")
    fig.suptitle(title, fontsize=14, fontweight="bold")
    with files.replacing(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return path


def verdict(answer: Any) -> str:
    """The figure's headline for an ``evaluation.Answer``: top-1, or "not a digit"."""
    name, probability = answer.top[0]
    if answer.rejected:
        return f"not a digit (closest: {name}, {100 * probability:.0f}%)"
    return f"read as {name} ({100 * probability:.1f}%)"


def _image(ax, values: np.ndarray, title: str, loc: str = "center") -> None:
    ax.imshow(values, cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=10, loc=loc)
    ax.axis("off")


def _f6(fig, grid, f6: np.ndarray, code: tuple[str, np.ndarray] | bool) -> None:
    if f6.ndim == 2:  # original: the paper's 7 x 12 picture, beside the nearest code
        _image(fig.add_subplot(grid[0, 4:6]), f6, "F6 (7x12)")
        _image(fig.add_subplot(grid[0, 6:8]), code[1], code[0].replace("closest RBF code",
                                                                        "closest code"))
        return
    ax = fig.add_subplot(grid[0, 3:9])
    ax.bar(range(len(f6)), f6, color="tab:gray")
    ax.set_title("F6 (84 values)", fontsize=10)
    ax.set_xlim(-1, len(f6))
    ax.tick_params(labelsize=9)


def _outputs(ax, probabilities: np.ndarray, class_names: tuple[str, ...]) -> None:
    top = int(np.argmax(probabilities))
    colours = ["tab:green" if k == top else "tab:blue" for k in range(len(class_names))]
    ax.bar(range(len(class_names)), probabilities, color=colours)
    ax.set_xticks(range(len(class_names)), class_names, fontsize=11)
    ax.set_ylim(0, 1.12)
    ax.tick_params(axis="y", labelsize=9)
    ax.set_title("output probabilities", fontsize=10)
    ax.text(top, probabilities[top] + 0.02, f"{100 * probabilities[top]:.0f}%",
            ha="center", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)


def plot_sweep(strip: np.ndarray, probabilities: np.ndarray, reads: list, path: Path,
               title: str, field: int = 32, step: int = models.SWEEP_STEP) -> Path:
    """The paper's Fig. 22-24 for one strip: the strip (uint8 (32, W, 1)), each of the
    sweep's answers (the reader's three looks averaged) as a column of 11 probabilities
    (0-9 and the blank) under the centre of the part of the strip it sees, each answer's
    likeliest class under its column, and the digits read (``strips.Read``s) marked where
    they fired."""
    from matplotlib.figure import Figure

    answers = probabilities.shape[0]
    width = strip.shape[1]
    fig = Figure(figsize=(max(6.4, width / 20), 4.8), layout="constrained")
    top, middle = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.5])
    top.imshow(255 - strip[..., 0], cmap="gray", aspect="auto",
               extent=(0, width, strip.shape[0], 0))
    top.set_ylim(strip.shape[0], -14)  # room above the strip for the digits read
    top.set_yticks([])
    top.spines[["top", "left", "right"]].set_visible(False)
    top.set_title("the strip (32 px high); red: each digit read", fontsize=10, loc="left")
    for read in reads:
        top.plot(read.centre, -2, "v", color="tab:red", markersize=7)
        top.text(read.centre, -5, str(read.digit), ha="center", va="bottom",
                 color="tab:red", fontsize=12, fontweight="bold")
    centres = field / 2 + step * np.arange(answers)
    middle.imshow(probabilities.T, aspect="auto", cmap="Greys", vmin=0, vmax=1,
                  extent=(centres[0] - step / 2, centres[-1] + step / 2, 10.5, -0.5),
                  interpolation="nearest")
    middle.set_yticks(range(11), [str(d) for d in range(10)] + ["blank"], fontsize=8)
    likeliest = probabilities.argmax(-1)
    middle.set_xticks(centres, ["·" if c == 10 else str(c) for c in likeliest], fontsize=8)
    for label, best in zip(middle.get_xticklabels(), likeliest, strict=True):
        label.set_color("tab:gray" if best == 10 else "tab:red")
    middle.tick_params(axis="x", length=2)
    middle.set_xlim(0, width)
    middle.set_title(f"an answer every {step} px, each seeing {field} px, three looks a pixel "
                     "apart averaged: black = 1, its likeliest below", fontsize=10, loc="left")
    fig.suptitle(title, fontsize=13, fontweight="bold")
    with files.replacing(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path
