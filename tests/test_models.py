import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lenet_jax
from lenet_jax.models import C3_TABLE, PartialConv, c3_connection_mask, rbf_codes

# Trainable parameters: the paper's 60,000 = 156 + 12 + 1,516 + 32 + 48,120 + 10,164,
# and what the PyTorch tutorials' versions print.
EXPECTED_PARAMS = {
    "original": 60_000,
    "tanh_avgpool": 61_706,
    "relu_maxpool": 61_706,
    "sigmoid_maxpool_28": 44_426,
    "relu_avgpool_pad2": 61_706,
    "relu_avgpool_pad2_dropout": 61_706,
}
ORIGINAL_LAYER_PARAMS = {"C1": 156, "S2": 12, "C3": 1_516, "S4": 32, "C5": 48_120, "F6": 10_164}


def _random_images(key, n, shape):
    return jax.random.normal(key, (n, *shape))


def test_every_preset_is_pinned():
    assert set(lenet_jax.PRESETS) == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_count_and_output_shape(name):
    model, input_shape = lenet_jax.create_model(name)
    params = lenet_jax.init_params(model, jax.random.key(0))
    assert lenet_jax.count_params(params) == EXPECTED_PARAMS[name]
    logits = model.apply({"params": params}, _random_images(jax.random.key(1), 5, input_shape))
    assert logits.shape == (5, 10)
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_original_layer_counts_match_the_paper():
    model, _ = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    assert {k: lenet_jax.count_params(v) for k, v in params.items()} == ORIGINAL_LAYER_PARAMS


@pytest.mark.parametrize("name", ["original", "relu_avgpool_pad2_dropout"])
def test_apply_is_pure_and_jit_agrees(name):
    model, input_shape = lenet_jax.create_model(name)
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(2), 4, input_shape)

    def forward(p, x):
        return model.apply({"params": p}, x)

    eager = forward(params, images)
    np.testing.assert_array_equal(eager, forward(params, images))
    jitted = jax.jit(forward)
    np.testing.assert_array_equal(jitted(params, images), jitted(params, images))
    np.testing.assert_allclose(jitted(params, images), eager, rtol=1e-5, atol=1e-5)


def test_dropout_only_in_training_and_keyed_by_rng():
    model, input_shape = lenet_jax.create_model("relu_avgpool_pad2_dropout")
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(3), 8, input_shape)

    def train_logits(seed):
        return model.apply(
            {"params": params}, images, train=True, rngs={"dropout": jax.random.key(seed)}
        )

    np.testing.assert_array_equal(train_logits(7), train_logits(7))
    assert not np.array_equal(train_logits(7), train_logits(8))
    assert not np.array_equal(train_logits(7), model.apply({"params": params}, images))


def test_c3_table_has_the_papers_60_connections():
    mask = c3_connection_mask()
    assert mask.shape == (6, 16) and mask.sum() == 60
    assert list(mask.sum(axis=0)) == [3] * 6 + [4] * 9 + [6]
    # Paper, Table I, columns 12-14: non-adjacent groups.
    assert [tuple(np.flatnonzero(mask[:, j])) for j in (12, 13, 14)] == [
        (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    ]
    assert tuple(np.flatnonzero(mask[:, 0])) == (0, 1, 2)
    assert tuple(np.flatnonzero(mask[:, 6])) == (0, 1, 2, 3)


def test_c3_output_map_ignores_unconnected_inputs():
    layer = PartialConv(C3_TABLE, in_maps=6)
    x = jax.random.normal(jax.random.key(0), (6, 14, 14, 2))  # channel-major (C, H, W, N)
    variables = layer.init(jax.random.key(1), x)
    bumped = x.at[5].add(3.0)  # S2 map 5 feeds C3 maps 3, 4, 5, 8-11, 13-15 only
    delta = jnp.abs(layer.apply(variables, bumped) - layer.apply(variables, x)).max(axis=(1, 2, 3))
    feeds = c3_connection_mask()[5]
    assert bool(jnp.all(delta[~feeds] == 0.0))
    assert bool(jnp.all(delta[feeds] > 0.0))


def test_rbf_output_is_negative_scaled_distance_to_fixed_codes():
    codes = rbf_codes()
    assert codes.shape == (10, 84)
    assert set(np.unique(codes)) == {-1.0, 1.0}
    assert len({c.tobytes() for c in codes}) == 10
    model, input_shape = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(4), 3, input_shape)
    logits, state = model.apply(
        {"params": params}, images, mutable=["intermediates"]
    )
    distance = state["intermediates"]["OUTPUT"]["squared_distance"][0]
    np.testing.assert_allclose(logits, -model.preset.rbf_logit_scale * distance, rtol=1e-6)
    assert bool(jnp.all(distance >= 0))


def test_original_gradients_reach_every_parameter():
    model, input_shape = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(5), 16, input_shape)
    labels = jnp.arange(16) % 10

    def loss(p):
        logits = model.apply({"params": p}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.grad(loss)(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isfinite(g))), path
        # every scalar parameter receives gradient, not just every array
        assert bool(jnp.all(g != 0.0)), (jax.tree_util.keystr(path), int(jnp.sum(g == 0)))


def test_bad_preset_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        lenet_jax.create_model("lenet7")
    message = str(err.value)
    assert "lenet7" in message
    for name in EXPECTED_PARAMS:
        assert name in message


def test_wrong_input_shape_is_a_clear_error():
    model, _ = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    with pytest.raises(ValueError, match=r"takes images of shape \(N, 32, 32, 1\)"):
        model.apply({"params": params}, jnp.zeros((2, 28, 28, 1)))


def test_preprocess_fits_mnist_to_each_preset():
    digits = np.zeros((2, 28, 28, 1), np.uint8)
    digits[:, 10:18, 12:16] = 255
    original = lenet_jax.get_preset("original")
    x = lenet_jax.preprocess(digits, original)
    assert x.shape == (2, 32, 32, 1)
    # Paper: background -0.1, ink 1.175; the 2-pixel border is background.
    np.testing.assert_allclose(x[0, 0, 0, 0], -0.1, atol=1e-6)
    np.testing.assert_allclose(x[0, 12, 14, 0], 1.175, atol=1e-5)
    np.testing.assert_allclose(x[0, 12 + 2, 14 + 2, 0], 1.175, atol=1e-5)
    resized = lenet_jax.preprocess(digits, lenet_jax.get_preset("relu_maxpool"))
    assert resized.shape == (2, 32, 32, 1)
    native = lenet_jax.preprocess(digits, lenet_jax.get_preset("relu_avgpool_pad2"))
    np.testing.assert_allclose(native[0, 0, 0, 0], -0.1307 / 0.3081, rtol=1e-6)
    with pytest.raises(ValueError, match="takes 28x28"):
        lenet_jax.preprocess(
            np.zeros((1, 32, 32, 1), np.uint8), lenet_jax.get_preset("relu_avgpool_pad2")
        )


def test_summary_lists_every_layer_and_the_total():
    table = lenet_jax.summary("original")
    for layer in ORIGINAL_LAYER_PARAMS:
        assert layer in table
    assert "60,000" in table


@pytest.mark.parametrize("backend", ["cpu", "gpu"])  # im2col / XLA's convolution
@pytest.mark.parametrize(
    ("x_shape", "k_shape"),
    [((1, 32, 32, 3), (5, 5, 1, 6)),     # C1 (channel-major: C, H, W, N)
     ((6, 14, 14, 3), (5, 5, 6, 16)),    # C3
     ((16, 5, 5, 3), (5, 5, 16, 120))],  # C5: a matmul
)
def test_conv2d_equals_xla_nhwc_convolution_and_its_gradients(x_shape, k_shape, backend):
    from lenet_jax.models import conv2d

    x = jax.random.normal(jax.random.key(0), x_shape)
    k = jax.random.normal(jax.random.key(1), k_shape) * 0.2
    swap = (3, 1, 2, 0)  # channel-major <-> NHWC

    def reference(x, k):
        y = jax.lax.conv_general_dilated(x.transpose(swap), k, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y.transpose(swap)

    def ours(x, k):
        return conv2d(x, k, backend)

    np.testing.assert_allclose(ours(x, k), reference(x, k), rtol=1e-5, atol=1e-5)
    weights = jax.random.normal(jax.random.key(2), reference(x, k).shape)
    grads = jax.grad(lambda x, k: jnp.sum(jnp.tanh(ours(x, k)) * weights), (0, 1))(x, k)
    expected = jax.grad(lambda x, k: jnp.sum(jnp.tanh(reference(x, k)) * weights), (0, 1))(x, k)
    for a, b in zip(grads, expected, strict=True):
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


@pytest.mark.parametrize("variant", ["original", "relu_avgpool_pad2"])
def test_every_product_in_training_is_float32_precision(variant):
    model, input_shape = lenet_jax.create_model(variant)
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
