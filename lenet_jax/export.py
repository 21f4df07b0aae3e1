"""Export a trained model so it runs without this package (the command line:
``lenet_jax.cli.export``):

    python -m lenet_jax.export --ckpt runs/best --out model/

writes ``model/lenet.jax`` (a serialised ``jax.export`` artefact: StableHLO with a
symbolic batch dimension, for CPU and CUDA), ``model/metadata.json``, and with
``--savedmodel`` a TensorFlow SavedModel in ``model/savedmodel`` (via jax2tf);
``--format onnx`` writes ``model/<preset>.onnx`` instead (``lenet_jax.to_onnx``).

The exported function takes uint8 MNIST-style images (batch, 28, 28, 1), white ink on
black, and returns (batch, classes) logits; preprocessing and parameters are inside it.
Load it with nothing but JAX:

    exported = jax.export.deserialize(open("model/lenet.jax", "rb").read())
    logits = exported.call(images)
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenet_jax import files

# JAX is imported where it is used: ``python -m lenet_jax.export`` runs this file, and
# its error boundary (Ctrl-C included) is up only once the command line starts.
if TYPE_CHECKING:
    import jax
    import numpy as np

ARTEFACT = "lenet.jax"
CALIBRATION = 1000  # training images whose activations set the int8 ranges
PLATFORMS = ("cpu", "cuda")


def inference_function(params: Any, metadata: dict) -> Callable[[jax.Array], jax.Array]:
    """images uint8 (B, 28, 28, 1) -> logits, of a model's ``params`` (closed over) and
    checkpoint ``metadata``."""
    from lenet_jax import inference, models

    module, _ = models.create_model(metadata["preset"])

    def predict(images: jax.Array) -> jax.Array:
        return inference.forward(module, params, images)

    return predict


def export_model(params: Any, metadata: dict, out_dir: str | Path,
                 platforms: tuple[str, ...] = PLATFORMS) -> Path:
    """Serialise a model (``checkpoint.restore_for_inference``'s or ``zoo.restore``'s
    params and metadata) with a symbolic batch size; returns the file."""
    import jax
    import jax.numpy as jnp

    from lenet_jax import models

    predict = inference_function(params, metadata)
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


def export_onnx(params: Any, metadata: dict, out_dir: str | Path) -> Path:
    """``out_dir/<preset>.onnx``: the same function as an ONNX graph of ONNX's own
    operators (``lenet_jax.to_onnx``), preprocessing inside, symbolic batch size."""
    from lenet_jax import to_onnx

    proto = to_onnx.model_proto(metadata["preset"], params, tuple(metadata["class_names"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{metadata['preset']}.onnx"
    with files.replacing(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return path


def calibration_images(train_images: np.ndarray) -> np.ndarray:
    """The ``CALIBRATION`` training images that set the int8 ranges: drawn with seed 0 from
    all but the last 5,000 (the validation slice a run holds out), in their order."""
    import numpy as np

    chosen = np.random.default_rng(0).choice(len(train_images) - 5000, CALIBRATION,
                                             replace=False)
    return train_images[np.sort(chosen)]


def quantize_int8(float_path: str | Path, calibration: np.ndarray, out_path: str | Path) -> Path:
    """``float_path``'s model statically quantised to int8 by onnxruntime (QDQ, weights
    int8 per channel, activations uint8, min-max ranges observed on ``calibration``,
    uint8 images); the same uint8 input, the same logits out."""
    import numpy as np
    from onnxruntime import quantization

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 100)))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    out_path = Path(out_path)
    with files.replacing(out_path) as tmp, tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # ONNX's shape inference and graph clean-up first, as onnxruntime asks
        quantization.quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantization.quantize_static(
            str(prepared), str(tmp), Reader(), quant_format=quantization.QuantFormat.QDQ,
            per_channel=True, activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax)
    return out_path


def reference_activations(params: Any, metadata: dict, images: np.ndarray) -> dict:
    """Each layer's output (JAX, float32; feature maps NHWC) and the logits for uint8
    ``images``: what an implementation of the network elsewhere (an FPGA, a C port)
    compares its own layers against."""
    import numpy as np

    from lenet_jax import inference, models

    module, _ = models.create_model(metadata["preset"])
    logits, layers = inference.forward(module, params, images, keep_maps=True)
    return {"images": images, "input": np.asarray(models.preprocess(images, module.preset)),
            **{name: np.asarray(value) for name, value in layers.items()},
            "logits": np.asarray(logits)}


def export_savedmodel(params: Any, metadata: dict, out_dir: str | Path) -> Path:
    """A TensorFlow SavedModel of the same function (polymorphic batch), via jax2tf."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    from lenet_jax import models

    predict = inference_function(params, metadata)
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

    cli.run(main)
