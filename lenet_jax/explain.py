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
    """One row per panel: the input, each layer's maps side by side, F6, the outputs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 11))
    grid = fig.add_gridspec(6, 16, height_ratios=[2.2, 1, 1, 1, 1, 1.6])
    _image(fig.add_subplot(grid[0, 0:4]), drawn["input"], "input (preprocessed)")
    codes = [name for name in drawn if name.startswith("closest")]
    _f6(fig, grid, drawn["F6"], codes and (codes[0], drawn[codes[0]]))
    for row, layer in enumerate(MAP_LAYERS, start=1):
        for channel in range(drawn[layer].shape[-1]):
            _image(fig.add_subplot(grid[row, channel]), drawn[layer][..., channel],
                   f"{layer}.{channel}" if channel == 0 else str(channel))
    bars = fig.add_subplot(grid[5, 1:15])
    bars.bar(range(len(class_names)), drawn["probabilities"], color="tab:blue")
    bars.set_xticks(range(len(class_names)), class_names)
    bars.set(ylim=(0, 1), ylabel="probability", title="output")
    fig.suptitle(title)
    with files.replacing(path) as tmp:
        fig.savefig(tmp, dpi=80)
    return path


def _image(ax, values: np.ndarray, title: str) -> None:
    ax.imshow(values, cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _f6(fig, grid, f6: np.ndarray, code: tuple[str, np.ndarray] | bool) -> None:
    if f6.ndim == 2:  # original: the paper's 7 x 12 picture, beside the nearest code
        _image(fig.add_subplot(grid[0, 6:8]), f6, "F6 (7x12)")
        _image(fig.add_subplot(grid[0, 9:11]), code[1], code[0])
        return
    ax = fig.add_subplot(grid[0, 6:16])
    ax.bar(range(len(f6)), f6, color="tab:gray")
    ax.set(title="F6 (84 values)", xlim=(-1, len(f6)))
