"""Applying a LeNet: preprocessing and the forward pass in one place (``forward``),
prediction in compiled chunks (with the map statistics of the "not a digit" rule only
when asked), and a split's loss and accuracy. Training, evaluation, export, explain and
the page all call this module; it knows nothing of training."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lenet_jax import models, rejection

# Images per chunk when predicting: on CPU larger chunks' im2col matrices outgrow the
# caches (the sweep: benchmarks/RESULTS.md); elsewhere 1,000.
EVAL_BATCH_SIZE = {"cpu": 128}


def eval_batch_size() -> int:
    return EVAL_BATCH_SIZE.get(jax.default_backend(), 1000)


def forward(module: models.LeNet, params: Any, images: jax.Array, *, train: bool = False,
            rngs: dict | None = None, keep_maps: bool = False) -> Any:
    """Logits for uint8 images (N, 28, 28, 1) or (N, S, S, 1): the preset's preprocessing,
    then the network. With ``keep_maps``, (logits, each layer's output by name, feature
    maps as NHWC: ``LeNet.keep_map``)."""
    x = models.preprocess(images, module.preset)
    if not keep_maps:
        return module.apply({"params": params}, x, train=train, rngs=rngs)
    logits, kept = module.apply({"params": params}, x, train=train, rngs=rngs, mutable=["maps"])
    return logits, kept["maps"]["layers"]


def _in_chunks(of_chunk: Callable, images: jax.Array, batch_size: int | None) -> Any:
    """``of_chunk`` over images in chunks of ``batch_size`` (default ``eval_batch_size``),
    as one ``lax.map``; its outputs (arrays of one row per image) joined back to N rows."""
    batch_size = batch_size or eval_batch_size()
    n = images.shape[0]
    chunks = math.ceil(n / batch_size)
    padded = jnp.pad(images, ((0, chunks * batch_size - n), (0, 0), (0, 0), (0, 0)))
    padded = padded.reshape(chunks, batch_size, *images.shape[1:])
    outputs = jax.lax.map(of_chunk, padded)
    return jax.tree.map(lambda out: out.reshape(chunks * batch_size, -1)[:n], outputs)


@functools.partial(jax.jit, static_argnames=("module", "batch_size"))
def predict_logits(module: models.LeNet, params: Any, images: jax.Array,
                   batch_size: int | None = None) -> jax.Array:
    """Logits for uint8 images (N, 28, 28, 1) in one compiled call, in chunks."""
    return _in_chunks(lambda chunk: forward(module, params, chunk), images, batch_size)


@functools.partial(jax.jit, static_argnames=("module", "batch_size"))
def predict_with_statistics(module: models.LeNet, params: Any, images: jax.Array,
                            batch_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """(logits, the map statistics the rejection rule reads) in one compiled call."""
    def of_chunk(chunk):
        logits, maps = forward(module, params, chunk, keep_maps=True)
        return logits, rejection.map_statistics(maps)

    return _in_chunks(of_chunk, images, batch_size)


def predict_images(module: models.LeNet, params: Any, images: np.ndarray,
                   statistics: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits (N, classes), with ``statistics`` the rule's map statistics, else None) for
    a few uint8 images in one compiled call; the batch is padded to a power of two up to
    an evaluation chunk, then to whole chunks: few programs, and one picture costs one."""
    chunk = min(eval_batch_size(), 1 << (len(images) - 1).bit_length())
    padded = np.zeros((-(-len(images) // chunk) * chunk, *images.shape[1:]), np.uint8)
    padded[:len(images)] = images
    padded = jnp.asarray(padded)
    if statistics:
        logits, kept = predict_with_statistics(module, params, padded, chunk)
        kept = np.asarray(kept[:len(images)])
    else:
        logits, kept = predict_logits(module, params, padded, chunk), None
    return np.asarray(logits[:len(images)]), kept


def predict(module: models.LeNet, params: Any, images: Any) -> np.ndarray:
    """Class probabilities (N, classes) for uint8 MNIST-style images, white on black:
    (N, 28, 28) or (N, 28, 28, 1), or one image (28, 28)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0-255), got {images.dtype}")
    if images.ndim == 2:
        images = images[None]
    if images.ndim == 3:
        images = images[..., None]
    return np.asarray(jax.nn.softmax(predict_images(module, params, images)[0], axis=-1))


def evaluate(module: models.LeNet, params: Any, images: Any, labels: Any,
             statistics: bool = False) -> dict[str, Any]:
    """Mean cross-entropy and accuracy over a whole split, in one compiled call; with
    ``statistics``, also each image's logits and map statistics (for the rejection
    rule), from the same pass."""
    loss, accuracy, logits, kept = _evaluation(module, params, jnp.asarray(images),
                                               jnp.asarray(labels), statistics)
    scores = {"loss": float(loss), "accuracy": float(accuracy)}
    return scores | ({"logits": np.asarray(logits), "statistics": np.asarray(kept)}
                     if statistics else {})


@functools.partial(jax.jit, static_argnames=("module", "statistics"))
def _evaluation(module: models.LeNet, params: Any, images: jax.Array, labels: jax.Array,
                statistics: bool) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    if statistics:
        logits, kept = predict_with_statistics(module, params, images)
    else:
        logits, kept = predict_logits(module, params, images), None
    # Cross-entropy with integer labels, as training's loss (Optax's), without importing
    # the training side.
    log_probabilities = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.take_along_axis(log_probabilities, labels[:, None], axis=-1).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == labels), logits, kept
