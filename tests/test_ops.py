"""The kernels under the layers: the channel-major convolution against XLA's NHWC one,
with its gradients, and float32 precision in every product of training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lenet_jax
from lenet_jax import ops


def _random_images(key, n, shape):
    return jax.random.normal(key, (n, *shape))


@pytest.mark.parametrize("kernel", ["im2col", "xla"])
@pytest.mark.parametrize(
    ("x_shape", "k_shape"),
    [((1, 32, 32, 3), (5, 5, 1, 6)),     # C1 (maps: C, H, W, N)
     ((6, 14, 14, 3), (5, 5, 6, 16)),    # C3
     ((16, 5, 5, 3), (5, 5, 16, 120))],  # C5: a matmul
)
def test_conv2d_equals_xla_nhwc_convolution_and_its_gradients(x_shape, k_shape, kernel):
    x = jax.random.normal(jax.random.key(0), x_shape)
    k = jax.random.normal(jax.random.key(1), k_shape) * 0.2
    swap = (3, 1, 2, 0)  # maps <-> NHWC

    def reference(x, k):
        y = jax.lax.conv_general_dilated(x.transpose(swap), k, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.transpose(swap)

    def ours(x, k):
        if kernel == "xla":
            return ops.xla_conv(x, k)
        return ops.conv2d(x, k)

    np.testing.assert_allclose(jax.jit(ours)(x, k), reference(x, k), rtol=1e-5, atol=1e-5)
    weights = jax.random.normal(jax.random.key(2), reference(x, k).shape)

    def gradients(conv):
        return jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.tanh(conv(x, k)) * weights),
                                (0, 1)))(x, k)

    for a, b in zip(gradients(ours), gradients(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _primitives(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs nested in it."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _primitives(inner)


@pytest.mark.parametrize("preset", ["original", "relu_avgpool_pad2"])
def test_every_product_in_training_is_float32_precision(preset):
    model, _ = lenet_jax.create_model(preset)  # the one module, as training builds it
    input_shape = model.preset.input_shape
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(1), 4, input_shape)

    def loss(params):
        return jnp.sum(model.apply({"params": params}, images) ** 2)

    products = [eqn for eqn in _primitives(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
                if eqn.primitive.name in ("dot_general", "conv_general_dilated")]
    assert len(products) >= 8  # forward and backward of C1, C3, C5, F6, OUTPUT
    highest = jax.lax.Precision.HIGHEST
    for eqn in products:
        assert eqn.params["precision"] in (highest, (highest, highest)), eqn
