"""The 1998 paper's training (LeCun, Bottou, Bengio and Haffner, Sec. II-B, Sec. III-C and
Appendix C), as pieces anyone can use with any network:

- ``map_loss``: the MAP criterion on the RBF penalties, E = y_D + log(e^-j + sum_i e^-y_i),
  whose constant j is a "rubbish class" competing with every digit
  (``rubbish_posterior`` is that class's posterior: the paper's own "not a digit");
- ``sdlm``: stochastic diagonal Levenberg-Marquardt as an Optax transformation, each
  parameter stepping by eta / (mu + h_kk);
- ``gauss_newton_diagonal``: h_kk, the diagonal of the Gauss-Newton matrix J^T H J over a
  few hundred patterns, exactly (the paper back-propagates second derivatives and drops
  cross terms at every layer: an approximation of the same diagonal);
- ``learning_rate_schedule``: eta per pass as Sec. III-C gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

MU = 0.02  # Sec. III-C: keeps the step bounded where the curvature is small
# At Appendix A's start the curvature is tiny nearly everywhere and a small mu diverges in
# the first pass; a larger one for the first passes gets the network out of that start.
START_MU = 1.0
# Sec. III-C: eta for 2 passes, then 3, 3, 4; then the last value.
PASSES_AND_RATES = ((2, 5e-4), (3, 2e-4), (3, 1e-4), (4, 5e-5), (None, 1e-5))
CURVATURE_PATTERNS = 500  # "re-estimated on 500 patterns before each pass"


def map_loss(penalties: jax.Array, labels: jax.Array, j: float) -> jax.Array:
    """(N,) the MAP criterion of each example: its class's penalty plus the log of
    e^-j + sum_i e^-y_i. ``penalties`` (N, K) are distances (low is close); as j grows
    this becomes softmax cross-entropy on the logits -penalties."""
    own = jnp.take_along_axis(penalties, labels[..., None], axis=-1)[..., 0]
    return own + jax.nn.logsumexp(_with_rubbish(penalties, j), -1)


def rubbish_posterior(penalties: jax.Array, j: float) -> jax.Array:
    """(N,) the rubbish class's posterior e^-j / (e^-j + sum_i e^-y_i)."""
    return jax.nn.softmax(_with_rubbish(penalties, j), -1)[..., 0]


def _with_rubbish(penalties: jax.Array, j: float) -> jax.Array:
    """(N, 1 + K) logits: -j for the rubbish class, then -penalties."""
    rubbish = jnp.full(penalties.shape[:-1] + (1,), -j, penalties.dtype)
    return jnp.concatenate([rubbish, -penalties], -1)


class SDLMState(NamedTuple):
    count: jax.Array  # steps taken, for the schedule
    curvature: Any  # h_kk, a pytree like the params; set by ``with_curvature``


def sdlm(learning_rate: optax.ScalarOrSchedule,
         mu: optax.ScalarOrSchedule = MU) -> optax.GradientTransformation:
    """Stochastic diagonal Levenberg-Marquardt: update = -eta / (mu + h) * gradient, with h
    the curvature last given to ``with_curvature`` (zero until then: plain SGD at eta/mu);
    eta and mu each a number or a schedule of the step (``mu_schedule``)."""

    def init(params):
        return SDLMState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        eta = learning_rate(state.count) if callable(learning_rate) else learning_rate
        damping = mu(state.count) if callable(mu) else mu
        updates = jax.tree.map(lambda g, h: -eta * g / (damping + h), updates, state.curvature)
        return updates, SDLMState(optax.safe_increment(state.count), state.curvature)

    return optax.GradientTransformation(init, update)


def with_curvature(opt_state: Any, curvature: Any) -> Any:
    """``opt_state`` (of ``sdlm``, alone or inside a chain) with ``curvature`` as h."""
    if isinstance(opt_state, SDLMState):
        return opt_state._replace(curvature=curvature)
    if isinstance(opt_state, tuple) and not hasattr(opt_state, "_fields"):
        return tuple(with_curvature(s, curvature) for s in opt_state)
    return opt_state


def gauss_newton_diagonal(outputs: Callable[[Any, jax.Array], jax.Array], params: Any,
                          inputs: jax.Array, output_hessian: jax.Array | None = None,
                          chunk: int = 25) -> Any:
    """The diagonal of the mean Gauss-Newton matrix, (1/N) sum_n J_n^T H J_n, where J_n is
    the Jacobian of ``outputs(params, inputs[n:n+1])[0]`` (K values) in the params and H
    the (K, K) ``output_hessian`` of the loss in those outputs (default 2 I: the squared
    distance's). A pytree like ``params``; ``chunk`` examples at a time bound the memory
    (K Jacobian rows per example)."""

    def one(x):
        values, pullback = jax.vjp(lambda p: outputs(p, x[None])[0], params)
        hessian = (2.0 * jnp.eye(values.shape[-1], dtype=values.dtype)
                   if output_hessian is None else output_hessian)
        (rows,) = jax.vmap(pullback)(jnp.eye(values.shape[-1], dtype=values.dtype))
        return jax.tree.map(lambda r: jnp.einsum("a...,ab,b...->...", r, hessian, r), rows)

    count = inputs.shape[0]
    chunks = -(-count // chunk)
    padded = jnp.concatenate([inputs, jnp.zeros((chunks * chunk - count, *inputs.shape[1:]),
                                                 inputs.dtype)])
    weights = (jnp.arange(chunks * chunk) < count).astype(jnp.float32).reshape(chunks, chunk)

    def add(total, batch):
        xs, w = batch
        diagonal = jax.vmap(one)(xs)
        return jax.tree.map(lambda t, d: t + jnp.tensordot(w, d, 1), total, diagonal), None

    total = jax.tree.map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(add, total, (padded.reshape(chunks, chunk, *inputs.shape[1:]),
                                         weights))
    return jax.tree.map(lambda t: t / count, total)


def mu_schedule(steps_per_pass: int, mu: float, start_passes: int) -> optax.ScalarOrSchedule:
    """mu at each step: ``START_MU`` for the first ``start_passes`` passes, then ``mu``."""
    if not start_passes:
        return mu
    return optax.join_schedules([optax.constant_schedule(START_MU), optax.constant_schedule(mu)],
                                [start_passes * steps_per_pass])


def learning_rate_schedule(steps_per_pass: int, scale: float = 1.0) -> optax.Schedule:
    """eta at each step: 0.0005 for 2 passes, 0.0002 for 3, 0.0001 for 3, 0.00005 for 4,
    then 0.00001 (Sec. III-C), times ``scale``."""
    boundaries, passes = [], 0
    for count, _ in PASSES_AND_RATES[:-1]:
        passes += count
        boundaries.append(passes * steps_per_pass)
    return optax.join_schedules(
        [optax.constant_schedule(rate * scale) for _, rate in PASSES_AND_RATES], boundaries)
