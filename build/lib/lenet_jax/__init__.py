"""lenet-jax: the LeNet-5 family in JAX/Flax.

    import jax, lenet_jax
    model, input_shape = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    logits = model.apply({"params": params}, lenet_jax.preprocess(uint8_images, model.preset))
"""

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
