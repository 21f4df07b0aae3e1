"""lenet-jax: the LeNet-5 family in JAX/Flax.

    import jax, lenet_jax
    model, input_shape = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    logits = model.apply({"params": params}, lenet_jax.preprocess(uint8_images, model.preset))

The names below load JAX and Flax on first use, not on ``import lenet_jax``: the command
lines set up their error boundary (and their Ctrl-C) before that second of imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

__all__ = [
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
    if name in __all__:
        return getattr(importlib.import_module("lenet_jax.models"), name)
    raise AttributeError(f"module 'lenet_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__ + list(globals()))
