"""lenet-jax: the LeNet-5 family in JAX/Flax.

A trained model, in three lines (one shipped in the package, or your own checkpoint,
``lenet_jax.load("runs/best")``):

    import lenet_jax
    model, params, metadata = lenet_jax.pretrained("original")
    probabilities = lenet_jax.predict(model, params, uint8_images)  # (N, 28, 28[, 1])

The numbers written in pictures (the network swept along a row of digits, issue #29):

    lenet_jax.read_numbers(["cheque.png"])  # ["1234"]; or ckpt="runs/best"

A new one:

    import jax, lenet_jax
    model, input_shape = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    logits = model.apply({"params": params}, lenet_jax.preprocess(uint8_images, model.preset))

The names below load JAX and Flax on first use, not on ``import lenet_jax``: the command
lines set up their error boundary (and their Ctrl-C) before that second of imports.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lenet_jax.checkpoint import load
    from lenet_jax.inference import predict
    from lenet_jax.models import (
        PRESETS,
        LeNet,
        Preset,
        count_params,
        create_model,
        get_preset,
        init_params,
        preprocess,
        summary,
    )
    from lenet_jax.reading import read_numbers
    from lenet_jax.zoo import pretrained

# name -> the module that defines it
_HOMES = {"load": "lenet_jax.checkpoint", "predict": "lenet_jax.inference",
          "pretrained": "lenet_jax.zoo", "read_numbers": "lenet_jax.reading"}
__all__ = [
    "__version__",
    "load",
    "predict",
    "pretrained",
    "read_numbers",
    "PRESETS",
    "LeNet",
    "Preset",
    "count_params",
    "create_model",
    "get_preset",
    "init_params",
    "preprocess",
    "summary",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("lenet-jax")
        except PackageNotFoundError:  # a checkout on sys.path, not installed
            return "0+unknown"
    if name in __all__:
        return getattr(importlib.import_module(_HOMES.get(name, "lenet_jax.models")), name)
    if importlib.util.find_spec(f"lenet_jax.{name}") is not None:  # lenet_jax.models etc.
        return importlib.import_module(f"lenet_jax.{name}")
    raise AttributeError(f"module 'lenet_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__ + list(globals()))
