"""The 1998 paper's training pieces (lenet_jax.paper) against hand-computed values, their
limits, and the exact Gauss-Newton diagonal built from full Jacobians."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from lenet_jax import paper


def test_map_loss_is_the_own_penalty_plus_log_of_rubbish_and_every_class():
    penalties = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.5, 2.0]])
    labels = jnp.array([0, 2])
    got = paper.map_loss(penalties, labels, j=2.0)
    first = 1.0 + math.log(math.exp(-2) + math.exp(-1) + math.exp(-2) + math.exp(-3))
    second = 2.0 + math.log(math.exp(-2) + math.exp(-4) + math.exp(-0.5) + math.exp(-2))
    np.testing.assert_allclose(got, [first, second], rtol=1e-6)
    # j -> infinity: the rubbish class vanishes, and it is cross-entropy on -penalties.
    far = paper.map_loss(penalties, labels, j=1e4)
    np.testing.assert_allclose(
        far, optax.softmax_cross_entropy_with_integer_labels(-penalties, labels), rtol=1e-6)
    # A small j makes every penalty costlier: the loss only grows as j falls.
    assert (paper.map_loss(penalties, labels, j=0.0) > got).all()


def test_rubbish_posterior_is_its_share_of_the_softmax_with_the_digits():
    penalties = jnp.array([[1.0, 2.0, 3.0]])
    total = math.exp(-2) + math.exp(-1) + math.exp(-2) + math.exp(-3)
    np.testing.assert_allclose(paper.rubbish_posterior(penalties, 2.0), [math.exp(-2) / total],
                               rtol=1e-6)
    assert float(paper.rubbish_posterior(penalties, 1e4)[0]) == 0.0


def _mlp(params, x):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def _exact_diagonal(outputs, params, inputs, hessian):
    """(1/N) sum_n diag(J_n^T H J_n) from the full Jacobian of every example (jacfwd)."""
    flat, unflatten = ravel_pytree(params)
    jacobians = jax.vmap(lambda x: jax.jacfwd(
        lambda f: outputs(unflatten(f), x[None])[0])(flat))(inputs)  # (N, K, P)
    diagonal = np.einsum("nap,ab,nbp->p", np.asarray(jacobians, np.float64), hessian,
                         np.asarray(jacobians, np.float64)) / len(inputs)
    return unflatten(jnp.asarray(diagonal, jnp.float32))


def test_gauss_newton_diagonal_is_the_exact_one_of_a_small_network():
    keys = jax.random.split(jax.random.key(0), 5)
    params = {"w1": jax.random.normal(keys[0], (4, 5)), "b1": jax.random.normal(keys[1], (5,)),
              "w2": jax.random.normal(keys[2], (5, 3)), "b2": jax.random.normal(keys[3], (3,))}
    inputs = jax.random.normal(keys[4], (7, 4))
    root = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, -0.5], [0.2, 0.0, 0.7]])
    hessian = root @ root.T  # positive definite, not diagonal
    got = paper.gauss_newton_diagonal(_mlp, params, inputs, jnp.asarray(hessian), chunk=3)
    expected = _exact_diagonal(_mlp, params, inputs, hessian)
    for name in params:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)


def test_gauss_newton_diagonal_of_a_linear_model_is_its_loss_hessian():
    """For outputs linear in the params, J^T H J is the Hessian of the loss itself; with
    the default H, 2 I, the loss is the squared distance sum f^2."""
    w = jax.random.normal(jax.random.key(1), (3, 2))
    inputs = jax.random.normal(jax.random.key(2), (6, 3))

    def linear(p, x):
        return x @ p

    def loss(p):
        return jnp.sum(linear(p, inputs) ** 2) / len(inputs)

    full = jax.hessian(loss)(w).reshape(6, 6)
    got = paper.gauss_newton_diagonal(linear, w, inputs, chunk=4)
    np.testing.assert_allclose(np.ravel(got), np.diag(full), rtol=1e-5)


def test_sdlm_steps_each_parameter_by_eta_over_mu_plus_its_curvature():
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    grads = {"a": jnp.array([0.5, -1.0]), "b": jnp.array(2.0)}
    curvature = {"a": jnp.array([0.0, 1.0]), "b": jnp.array(0.48)}
    tx = paper.sdlm(0.1, mu=0.02)
    state = tx.init(params)
    updates, _ = tx.update(grads, state)  # curvature still zero: eta / mu
    np.testing.assert_allclose(updates["a"], [-0.1 * 0.5 / 0.02, 0.1 / 0.02], rtol=1e-6)
    state = paper.with_curvature(state, curvature)
    updates, state = tx.update(grads, state)
    np.testing.assert_allclose(updates["a"], [-0.1 * 0.5 / 0.02, 0.1 / 1.02], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], -0.1 * 2.0 / 0.5, rtol=1e-6)
    assert int(state.count) == 1
    # Inside a chain, and with a schedule read at the step count.
    chained = optax.chain(optax.identity(), paper.sdlm(lambda step: 0.1 * (step + 1)))
    chain_state = paper.with_curvature(chained.init(params), curvature)
    for step in range(3):
        updates, chain_state = chained.update(grads, chain_state)
        np.testing.assert_allclose(updates["b"], -0.1 * (step + 1) * 2.0 / 0.5, rtol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 64.0])
def test_learning_rate_schedule_is_the_papers_pass_by_pass(scale):
    steps = 7
    schedule = paper.learning_rate_schedule(steps, scale)
    per_pass = [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 8
    for n, rate in enumerate(per_pass):
        for step in (n * steps, n * steps + steps - 1):
            assert float(schedule(step)) == pytest.approx(rate * scale, rel=1e-6), (n, step)
