"""Export a trained model so it runs without this package (the command line:
``lenet_jax.cli.export``):

    python -m lenet_jax.export --ckpt runs/best --out model/

writes ``model/lenet.jax`` (a serialised ``jax.export`` artefact: StableHLO with a
symbolic batch dimension, for CPU and CUDA), ``model/metadata.json``, and with
``--savedmodel`` a TensorFlow SavedModel in ``model/savedmodel`` (via jax2tf).

The exported function takes uint8 MNIST-style images (batch, 28, 28, 1), white ink on
black, and returns (batch, classes) logits; preprocessing and parameters are inside it.
Load it with nothing but JAX:

    exported = jax.export.deserialize(open("model/lenet.jax", "rb").read())
    logits = exported.call(images)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lenet_jax import files

# JAX is imported where it is used: ``python -m lenet_jax.export`` runs this file, and
# its error boundary (Ctrl-C included) is up only once the command line starts.
if TYPE_CHECKING:
    import jax

ARTEFACT = "lenet.jax"
PLATFORMS = ("cpu", "cuda")


def inference_function(ckpt: str | Path) -> tuple[Callable[[jax.Array], jax.Array], dict]:
    """(images uint8 (B, 28, 28, 1) -> logits, metadata), parameters closed over."""
    from lenet_jax import checkpoint, inference, models

    params, metadata = checkpoint.restore_for_inference(ckpt)
    module, _ = models.create_model(metadata["preset"])

    def predict(images: jax.Array) -> jax.Array:
        return inference.forward(module, params, images)

    return predict, metadata


def export_model(ckpt: str | Path, out_dir: str | Path,
                 platforms: tuple[str, ...] = PLATFORMS) -> Path:
    """Serialise the checkpoint's model with a symbolic batch size; returns the file."""
    import jax
    import jax.numpy as jnp

    from lenet_jax import models

    predict, metadata = inference_function(ckpt)
    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, models.MNIST_SIZE, models.MNIST_SIZE, 1), jnp.uint8)
    exported = jax.export.export(jax.jit(predict), platforms=platforms)(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ARTEFACT
    with files.replacing(path) as tmp:
        tmp.write_bytes(exported.serialize())
    info = {key: metadata[key] for key in ("preset", "dataset", "class_names", "epoch")}
    info |= {"input": "uint8 (batch, 28, 28, 1), white on black", "output": "logits",
             "platforms": list(platforms)}
    with files.replacing(out_dir / "metadata.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return path


def export_savedmodel(ckpt: str | Path, out_dir: str | Path) -> Path:
    """A TensorFlow SavedModel of the same function (polymorphic batch), via jax2tf."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    from lenet_jax import models

    predict, _ = inference_function(ckpt)
    side = models.MNIST_SIZE
    module = tf.Module()
    module.predict = tf.function(
        jax2tf.convert(predict, polymorphic_shapes=[f"(b, {side}, {side}, 1)"]),
        input_signature=[tf.TensorSpec([None, side, side, 1], tf.uint8)], autograph=False,
    )
    path = Path(out_dir) / "savedmodel"
    tf.saved_model.save(module, str(path))
    return path


if __name__ == "__main__":  # the command line lives with the others
    from lenet_jax import cli
    from lenet_jax.cli.export import main

    cli.exit(main())
