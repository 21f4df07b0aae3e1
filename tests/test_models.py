import dataclasses
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference

import lenet_jax
from lenet_jax import models, ops
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


def _forward(model):
    return jax.jit(lambda params, images: model.apply({"params": params}, images))


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_count_and_output_shape(name):
    model, input_shape = lenet_jax.create_model(name)
    params = jax.eval_shape(lambda key: lenet_jax.init_params(model, key), jax.random.key(0))
    assert lenet_jax.count_params(params) == EXPECTED_PARAMS[name]
    images = jax.ShapeDtypeStruct((5, *input_shape), jnp.float32)
    assert jax.eval_shape(_forward(model), params, images).shape == (5, 10)


def test_init_params_is_one_compiled_call_and_traces_inside_transformations():
    model, _ = lenet_jax.create_model("relu_maxpool")
    alone = lenet_jax.init_params(model, jax.random.key(3))
    inside = jax.jit(lambda k: lenet_jax.init_params(model, k))(jax.random.key(3))
    batched = jax.vmap(lambda k: lenet_jax.init_params(model, k))(
        jax.random.split(jax.random.key(3), 2))
    for a, b, c in zip(*map(jax.tree_util.tree_leaves, (alone, inside, batched)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # compiled differently
        assert c.shape == (2, *a.shape)


def test_original_layer_counts_match_the_paper():
    model, _ = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    assert {k: lenet_jax.count_params(v) for k, v in params.items()} == ORIGINAL_LAYER_PARAMS


@pytest.mark.parametrize("name", ["original"])
def test_apply_is_pure_and_jit_agrees(name):
    """The output depends on (params, images) alone: other params give other logits, and
    going back gives the first ones again; op-by-op execution (no jit anywhere, not even
    inside) agrees with one compiled call."""
    model, input_shape = lenet_jax.create_model(name)
    params = lenet_jax.init_params(model, jax.random.key(0))
    other = lenet_jax.init_params(model, jax.random.key(1))
    images = _random_images(jax.random.key(2), 4, input_shape)
    jitted = _forward(model)
    first = jitted(params, images)
    assert not np.allclose(jitted(other, images), first)
    np.testing.assert_array_equal(jitted(params, images), first)
    with jax.disable_jit():
        op_by_op = model.apply({"params": params}, images)
    np.testing.assert_allclose(op_by_op, first, rtol=1e-5, atol=1e-5)


def test_dropout_only_in_training_and_keyed_by_rng():
    model, input_shape = lenet_jax.create_model("relu_avgpool_pad2_dropout")
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(3), 8, input_shape)

    @jax.jit
    def train_logits(seed):
        return model.apply(
            {"params": params}, images, train=True, rngs={"dropout": jax.random.key(seed)}
        )

    np.testing.assert_array_equal(train_logits(7), train_logits(7))
    assert not np.array_equal(train_logits(7), train_logits(8))
    assert not np.array_equal(train_logits(7), _forward(model)(params, images))


def test_c3_table_is_table_i_of_the_paper_in_the_stored_order():
    assert np.array_equal(c3_connection_mask(), reference.table_i_mask())
    assert reference.table_i_mask().sum() == 60
    assert C3_TABLE == reference.C3_INPUTS  # the order of C3's kernels in a checkpoint


def test_each_c3_map_changes_exactly_with_the_s2_maps_table_i_connects():
    layer = PartialConv(C3_TABLE, in_maps=6)
    x = jax.random.normal(jax.random.key(0), (2, 14, 14, 6))  # NHWC, as S2's output
    variables = layer.init(jax.random.key(1), ops.to_maps(x))
    c3 = jax.jit(lambda x: ops.from_maps(layer.apply(variables, ops.to_maps(x))))
    base = c3(x)
    for s2_map, row in enumerate(reference.table_i_mask()):
        delta = np.asarray(jnp.abs(c3(x.at[..., s2_map].add(3.0)) - base).max(axis=(0, 1, 2)))
        assert np.array_equal(delta > 0, row), s2_map


def test_scaled_tanh_is_the_papers_squashing_function():
    a = np.linspace(-4, 4, 81)
    np.testing.assert_allclose(models.scaled_tanh(jnp.asarray(a, jnp.float32)),
                               1.7159 * np.tanh(2 / 3 * a), rtol=1e-6, atol=1e-6)
    # The paper's reason for A and S: f(1) = 1 and f(-1) = -1.
    np.testing.assert_allclose(models.scaled_tanh(jnp.array([1.0, -1.0])), [1, -1], atol=2e-4)


def test_rbf_codes_are_the_recorded_bitmaps_one_per_digit():
    codes = rbf_codes()
    assert codes.shape == (10, 84) and set(np.unique(codes)) == {-1.0, 1.0}
    assert len({c.tobytes() for c in codes}) == 10
    reference.use_codes(codes)  # the digest of all ten and three rows written out


def test_paper_init_is_uniform_within_2_4_over_the_fan_in():
    """Appendix A: weights uniform in [-2.4 / F, 2.4 / F], F the unit's fan-in; C3's units
    have fan-ins of 75, 100 and 150 (3, 4 or 6 maps of 5x5)."""
    weights = np.asarray(models.paper_uniform(25)(jax.random.key(0), (20000,)))
    assert weights.min() >= -2.4 / 25 and weights.max() <= 2.4 / 25
    assert weights.min() < -0.99 * 2.4 / 25 and weights.max() > 0.99 * 2.4 / 25
    paper = dataclasses.replace(lenet_jax.get_preset("original"), init="paper")
    params = lenet_jax.init_params(models.LeNet(paper), jax.random.key(1))
    c3 = np.asarray(params["C3"]["kernel"])  # (5, 5, 60): connections in C3_INPUTS' order
    fan_in = np.repeat([25 * len(m) for m in reference.C3_INPUTS],
                       [len(m) for m in reference.C3_INPUTS])
    assert np.all(np.abs(c3).max(axis=(0, 1)) <= 2.4 / fan_in)
    assert np.abs(c3[..., :18]).max() > 0.9 * 2.4 / 75  # the 3-map units' wider range


def _perturbed(params, key):
    """``params`` plus noise on every leaf: biases and subsampling coefficients that are
    not their initial zeros and 0.25, so that each takes part in the comparison."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(tree, [
        leaf + 0.1 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys,
                                                                         strict=True)])


def _digit_like_images(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (n, 28, 28, 1)).astype(np.uint8)
    for i in range(n):
        top, left = rng.integers(3, 12, 2)
        images[i, top:top + 14, left:left + 4] = rng.integers(150, 256)
        images[i, top:top + 3, left:left + 12] = 255
    return images


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_every_preset_computes_what_the_numpy_reference_computes(name):
    """Preprocessing, every layer's maps and the logits against tests/reference.py, a
    plain-NumPy LeNet written from the paper and the tutorials."""
    reference.use_codes(rbf_codes())
    model, _ = lenet_jax.create_model(name)
    params = _perturbed(lenet_jax.init_params(model, jax.random.key(0)), jax.random.key(1))
    images = _digit_like_images(3, seed=2)

    @jax.jit
    def layers(params, images):
        x = lenet_jax.preprocess(images, model.preset)
        logits, kept = model.apply({"params": params}, x, mutable=["maps"])
        return x, logits, kept["maps"]["layers"]

    x, logits, maps = jax.device_get(layers(params, images))
    expected = reference.forward(jax.device_get(params), images, name)
    np.testing.assert_allclose(x[..., 0], expected["input"], rtol=1e-5, atol=1e-5)
    for layer in ("C1", "S2", "C3", "S4", "F6"):
        np.testing.assert_allclose(maps[layer], expected[layer], rtol=2e-4, atol=2e-4,
                                   err_msg=layer)
    np.testing.assert_allclose(logits, expected["logits"], rtol=2e-4, atol=2e-4)


def test_dropout_drops_half_of_f6_in_training_and_scales_the_rest():
    model, input_shape = lenet_jax.create_model("relu_avgpool_pad2_dropout")
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(3), 64, input_shape)
    _, state = jax.jit(lambda p, x: model.apply(
        {"params": p}, x, train=True, rngs={"dropout": jax.random.key(4)},
        capture_intermediates=True))(params, images)
    f6 = np.asarray(state["intermediates"]["F6"]["__call__"][0])
    f6 = np.maximum(f6, 0)  # F6's ReLU, as the dropout layer sees it
    dropped = np.asarray(state["intermediates"]["Dropout_0"]["__call__"][0])
    rate = reference.DROPOUT["relu_avgpool_pad2_dropout"]
    live = f6 > 0
    assert live.sum() > 2000
    assert abs(np.mean(dropped[live] == 0) - rate) < 0.03
    kept = live & (dropped != 0)
    np.testing.assert_allclose(dropped[kept], f6[kept] / (1 - rate), rtol=1e-5)


def test_rbf_output_is_negative_scaled_distance_to_fixed_codes():
    reference.use_codes(rbf_codes())
    model, input_shape = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(4), 3, input_shape)
    logits, state = jax.jit(lambda p, x: model.apply({"params": p}, x,
                                                     capture_intermediates=True))(params, images)
    f6 = np.asarray(state["intermediates"]["F6"]["__call__"][0], np.float64)
    f6 = reference.A * np.tanh(reference.S * f6)  # F6's squashing, then the RBF units
    distance = ((f6[:, None, :] - rbf_codes()[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(logits, -reference.RBF_LOGIT_SCALE * distance, rtol=1e-5)


def test_original_gradients_reach_every_parameter():
    model, input_shape = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(5), 16, input_shape)
    labels = jnp.arange(16) % 10

    def loss(p):
        logits = model.apply({"params": p}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.jit(jax.grad(loss))(params)
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


def test_summary_shows_nhwc_shapes_and_the_papers_counts():
    """The whole table, as the paper's Sec. II-B counts each layer: (N, H, W, C) shapes."""
    assert lenet_jax.summary("original", batch_size=2).splitlines()[1:] == [
        "layer   output shape     parameters",
        "input   (2, 32, 32, 1)             ",
        "C1      (2, 28, 28, 6)          156",
        "S2      (2, 14, 14, 6)           12",
        "C3      (2, 10, 10, 16)       1,516",
        "S4      (2, 5, 5, 16)            32",
        "C5      (2, 1, 1, 120)       48,120",
        "F6      (2, 84)              10,164",
        "OUTPUT  (2, 10)                    ",  # fixed RBF codes: no parameters
        "total                        60,000",
    ]
    assert sum(ORIGINAL_LAYER_PARAMS.values()) == 60_000


def test_a_preset_field_outside_its_choices_raises_naming_the_field():
    with pytest.raises(ValueError, match=r"preset 'original': pool='maxx' is not one of "
                                         r"'trainable', 'avg', 'max'"):
        dataclasses.replace(lenet_jax.get_preset("original"), pool="maxx")
    with pytest.raises(ValueError, match=r"activation='gelu'"):
        dataclasses.replace(lenet_jax.get_preset("relu_maxpool"), activation="gelu")
    # every activation a row may name has a function
    assert set(models.ACTIVATIONS) == set(typing.get_args(models.Activation))


# --- every JAX transformation on the model users import (lenet_jax.create_model) ---


@pytest.fixture(scope="module")
def public_original():
    model, input_shape = lenet_jax.create_model("original")
    params = lenet_jax.init_params(model, jax.random.key(0))
    images = _random_images(jax.random.key(7), 2, input_shape)

    return model, params, images, _forward(model)


def _close(a, b, tol=2e-4):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.mark.slow  # kept out of the 2-minute default suite (CI runs it)
def test_forward_mode_agrees_with_reverse_mode(public_original):
    """jvp, jacfwd and linearize through model.apply: u . (J v) == (J^T u) . v."""
    _, params, images, f = public_original
    v = _random_images(jax.random.key(8), *images.shape[:1], images.shape[1:])
    u = jax.random.normal(jax.random.key(9), (images.shape[0], 10))
    logits, jv = jax.jit(lambda x, v: jax.jvp(lambda x: f(params, x), (x,), (v,)))(images, v)
    _, vjp = jax.vjp(lambda x: f(params, x), images)
    (jtu,) = vjp(u)
    _close(jnp.vdot(u, jv), jnp.vdot(jtu, v), tol=1e-3)
    _close(logits, f(params, images))
    _, linear = jax.linearize(lambda x: f(params, x), images)
    _close(linear(v), jv)
    one = images[:1]
    _close(jax.jit(jax.jacfwd(lambda x: f(params, x)))(one),
           jax.jit(jax.jacrev(lambda x: f(params, x)))(one))


def test_hessian_vector_product_matches_finite_differences(public_original):
    """jvp of grad (forward-over-reverse) through the model."""
    _, params, images, f = public_original
    labels = jnp.arange(images.shape[0])

    def loss(x):
        return optax.softmax_cross_entropy_with_integer_labels(f(params, x), labels).sum()

    v = _random_images(jax.random.key(10), *images.shape[:1], images.shape[1:])
    _, hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(loss), (x,), (v,)))(images, v)
    eps = 1e-2
    grad = jax.jit(jax.grad(loss))
    finite = (grad(images + eps * v) - grad(images - eps * v)) / (2 * eps)
    assert float(jnp.linalg.norm(hvp - finite) / jnp.linalg.norm(finite)) < 0.05


@pytest.mark.slow  # kept out of the 2-minute default suite (CI runs it)
def test_per_example_gradients_and_parameter_ensembles_vmap(public_original):
    _, params, images, f = public_original
    labels = jnp.arange(images.shape[0])

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(f(p, x[None]), y[None]).sum()

    def batch_loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(f(p, images), labels).sum()

    per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(params, images, labels)
    total = jax.jit(jax.grad(batch_loss))(params)
    for a, b in zip(jax.tree_util.tree_leaves(per_example), jax.tree_util.tree_leaves(total),
                    strict=True):
        _close(a.sum(0), b)
    ensemble = jax.tree_util.tree_map(lambda a: jnp.stack([a, 1.1 * a, -a]), params)
    stacked = jax.jit(jax.vmap(f, in_axes=(0, None)))(ensemble, images)
    for i in range(3):
        _close(stacked[i], f(jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], ensemble), images))


def test_input_gradient_bfloat16_and_batch_one(public_original):
    _, params, images, f = public_original
    saliency = jax.jit(jax.grad(lambda x: f(params, x)[:, 3].sum()))(images)
    assert saliency.shape == images.shape and bool(jnp.any(saliency != 0))
    to_bf16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    low = jax.jit(f)(to_bf16, images.astype(jnp.bfloat16))
    assert low.dtype == jnp.bfloat16
    _close(low.astype(jnp.float32), f(params, images), tol=0.1)
    _close(jax.jit(f)(params, images[:1])[0], f(params, images)[0])
