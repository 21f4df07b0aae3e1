"""Training: a pure ``train_step``, an epoch as one compiled ``lax.scan``, and
``train_and_evaluate``, the whole run read top to bottom: set up, resume, then per epoch
train, evaluate, save and log. Applying the model is ``lenet_jax.inference``'s.

Randomness is a function of (seed, epoch, step) alone, so a run resumed from any
epoch's checkpoint retraces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from lenet_jax import checkpoint, inference, models, outliers, paper, rejection, zoo
from lenet_jax.config import ConfigError, ResumeMismatchError, TrainConfig
from lenet_jax.data import Dataset, Split, split_validation
from lenet_jax.reporting import MetricsLog
from lenet_jax.runtime import phase


class TrainState(train_state.TrainState):
    module: models.LeNet = struct.field(pytree_node=False)
    # The loss ("cross_entropy", or "map" with its rubbish penalty j): TrainConfig's.
    criterion: tuple[str, float] = struct.field(pytree_node=False,
                                                default=("cross_entropy", 0.0))


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; ``step`` is the first optimiser step that did."""

    def __init__(self, step: int, epoch: int):
        super().__init__(f"loss became NaN/Inf at step {step} (epoch {epoch})")
        self.step, self.epoch = step, epoch


class RunFinished(Exception):  # noqa: N818 (an outcome, not an error)
    """A resume of a run that has already trained the epochs asked for; ``schedule`` says
    whether more epochs can continue it (a cosine schedule ends where it was planned)."""

    def __init__(self, run_dir: Path, epoch: int, schedule: str):
        super().__init__(f"{run_dir} has already trained {epoch} epochs; nothing to do")
        self.run_dir, self.epoch, self.schedule = run_dir, epoch, schedule


def make_mesh(devices: int = 0, batch_size: int = 0) -> Mesh | None:
    """A 1-D mesh ("data") over the first ``devices`` devices (0: all of them, over
    every host); None when that is a single device, so nothing is sharded. The global
    ``batch_size`` must divide over them."""
    available = jax.devices()
    count = devices or len(available)
    if count > len(available):
        raise ConfigError("devices", count, f"{{name}} {{value}}: only {len(available)} visible")
    if batch_size % count:
        raise ConfigError("batch_size", batch_size,
                          f"{{name}} {{value}} does not divide over {count} devices")
    if count == 1:
        return None
    return Mesh(np.asarray(available[:count]), ("data",))


def replicated(mesh: Mesh | None, tree: Any) -> Any:
    """``tree`` on every device of ``mesh`` (the default device when there is none)."""
    if mesh is None:
        return jax.device_put(tree)
    sharding = NamedSharding(mesh, P())
    # Works across hosts too: each process holds the whole (small) array.
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return math.ceil(num_examples / batch_size)


def make_optimizer(config: TrainConfig, num_steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam (or the paper's SDLM, ``lenet_jax.paper``) at the schedule's rate; with weight
    decay as PyTorch's ``Adam(weight_decay=)`` does it."""
    schedule = learning_rate_schedule(config, num_steps_per_epoch)
    if config.optimizer == "sdlm":
        start_passes = min(config.mu_start_passes, config.epochs)  # beyond the run: all
        return _sdlm(schedule, _mu(num_steps_per_epoch, config.mu, start_passes),
                     config.weight_decay)
    return _adam(schedule, config.weight_decay)


def learning_rate_schedule(config: TrainConfig,
                           num_steps_per_epoch: int) -> float | optax.Schedule:
    """The learning rate: a constant, or linear warmup then cosine decay to 0 over all
    the epochs' steps (``learning_rate_at`` reads either)."""
    if config.schedule == "cosine":
        return _cosine(config.learning_rate, config.epochs * num_steps_per_epoch,
                       int(config.warmup_epochs * num_steps_per_epoch))
    if config.schedule == "paper":
        return _paper_rates(num_steps_per_epoch,
                            config.learning_rate / paper.PASSES_AND_RATES[0][1])
    return config.learning_rate


def learning_rate_at(schedule: float | optax.Schedule, step: int) -> float:
    return float(_compiled(schedule)(step)) if callable(schedule) else schedule


@functools.cache
def _compiled(schedule: optax.Schedule) -> Callable[[int], jax.Array]:
    """One program for the schedule, where calling it eagerly compiles each of its ops."""
    return jax.jit(schedule)


# One object per recipe: train states built alike have equal static parts, so the
# compiled epoch is reused instead of traced and compiled again.
@functools.cache
def _cosine(learning_rate: float, steps: int, warmup_steps: int) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, steps)


@functools.cache
def _paper_rates(steps_per_pass: int, scale: float) -> optax.Schedule:
    return paper.learning_rate_schedule(steps_per_pass, scale)


@functools.cache
def _mu(steps_per_pass: int, mu: float, start_passes: int) -> float | optax.Schedule:
    return paper.mu_schedule(steps_per_pass, mu, start_passes)


@functools.cache
def _adam(learning_rate: float | optax.Schedule,
          weight_decay: float = 0.0) -> optax.GradientTransformation:
    adam = optax.adam(learning_rate)
    if not weight_decay:
        return adam
    # L2 added to the gradient before Adam's moments (coupled, as PyTorch's Adam), which
    # is what the write-ups used; not AdamW's decoupled decay.
    return optax.chain(optax.add_decayed_weights(weight_decay), adam)


@functools.cache
def _sdlm(learning_rate: float | optax.Schedule, mu: float | optax.Schedule,
          weight_decay: float = 0.0) -> optax.GradientTransformation:
    sdlm = paper.sdlm(learning_rate, mu)
    return optax.chain(optax.add_decayed_weights(weight_decay), sdlm) if weight_decay else sdlm


def create_train_state(config: TrainConfig, num_steps_per_epoch: int) -> TrainState:
    """Fresh parameters (``models.init_params``'s, from ``config.seed``, or with
    ``init="shipped"`` the package's trained ones) and optimiser state, in compiled
    calls."""
    preset = models.get_preset(config.preset)
    if config.init == "paper":
        preset = dataclasses.replace(preset, init="paper")
    module = models.LeNet(preset)
    if config.init == "shipped":  # the package's trained weights of the preset
        params = zoo.restore(config.preset, config.dataset)[0]
    else:
        params = models.init_params(module, _init_key(config.seed))
    return _with_optimizer(module, make_optimizer(config, num_steps_per_epoch), params,
                           (config.loss, config.rubbish))


@jax.jit
def _init_key(seed: jax.Array) -> jax.Array:
    init_key, _ = jax.random.split(jax.random.key(seed))
    return init_key


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _with_optimizer(module: models.LeNet, tx: optax.GradientTransformation,
                    params: Any, criterion: tuple[str, float]) -> TrainState:
    return TrainState.create(apply_fn=module.apply, params=params, tx=tx, module=module,
                             criterion=criterion)


@functools.partial(jax.jit, static_argnames=("module",))
def curvature(module: models.LeNet, params: Any, images: jax.Array) -> Any:
    """SDLM's h: the Gauss-Newton diagonal of the squared error at the network's last
    hidden layer for an RBF head (F6: what the RBF units measure; the paper's MSE
    criterion), else at the logits, over ``images``."""
    def outputs(p, x):
        logits, layers = inference.forward(module, p, x, keep_maps=True)
        return layers["F6"] if module.preset.head == "rbf" else logits

    return paper.gauss_newton_diagonal(outputs, params, images)


def estimate_curvature(state: TrainState, images: jax.Array, seed: int,
                       epoch: int) -> TrainState:
    """``state`` with SDLM's h (``curvature``) estimated on ``paper.CURVATURE_PATTERNS``
    of ``images``, drawn for the seed's epoch ``epoch``."""
    count = min(paper.CURVATURE_PATTERNS, len(images))
    sample = jax.random.choice(jax.random.fold_in(epoch_key(seed, epoch), 7), len(images),
                               (count,), replace=False)
    h = curvature(state.module, state.params, images[sample])
    return state.replace(opt_state=paper.with_curvature(state.opt_state, h))


def epoch_key(seed: int, epoch: int) -> jax.Array:
    """The key of epoch ``epoch`` (0-based): data order, dropout and augmentation."""
    _, train_key = jax.random.split(jax.random.key(seed))
    return jax.random.fold_in(train_key, epoch)


@struct.dataclass
class EpochPlan:
    """Which examples each step sees: ``indices[i]`` with ``mask[i]`` false on padding.

    The last batch is padded to full size and masked, so every example is seen once
    an epoch and every step has one shape (one compilation, scannable).
    """

    indices: jax.Array  # int32 (steps, batch)
    mask: jax.Array  # bool (steps, batch)
    key: jax.Array  # per-step keys are fold_in(key, step)
    # How each step's batch is laid out over devices (None: one device). The SPMD
    # partitioner splits the step along it and all-reduces the gradients.
    batch_sharding: NamedSharding | None = struct.field(pytree_node=False, default=None)


def plan_epoch(
    seed: int, epoch: int, num_examples: int, batch_size: int, mesh: Mesh | None = None
) -> EpochPlan:
    """Epoch ``epoch``'s plan (0-based), a function of (seed, epoch) alone; one compiled
    call, replicated over ``mesh``."""
    sharding = NamedSharding(mesh, P()) if mesh is not None else None
    plan = _plan(seed, epoch, num_examples, batch_size, sharding)
    if mesh is None:
        return plan
    return plan.replace(batch_sharding=NamedSharding(mesh, P("data")))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _plan(seed: jax.Array, epoch: jax.Array, num_examples: int, batch_size: int,
          sharding: NamedSharding | None) -> EpochPlan:
    key = epoch_key(seed, epoch)
    if sharding is not None:
        key = jax.lax.with_sharding_constraint(key, sharding)
    order_key, step_key = jax.random.split(key)
    steps = steps_per_epoch(num_examples, batch_size)
    order = jax.random.permutation(order_key, num_examples).astype(jnp.int32)
    padding = steps * batch_size - num_examples
    indices = jnp.concatenate([order, jnp.zeros((padding,), jnp.int32)])
    mask = jnp.arange(steps * batch_size) < num_examples
    plan = EpochPlan(indices.reshape(steps, batch_size), mask.reshape(steps, batch_size), step_key)
    if sharding is not None:
        plan = jax.lax.with_sharding_constraint(plan, sharding)
    return plan


def random_affine(key: jax.Array, images: jax.Array) -> jax.Array:
    """The paper's kind of distortion (Sec. V-B): per image a random shift of up to 2 px,
    rotation of up to 10 degrees and scaling by 0.9-1.1, bilinear, background filled."""
    n, height, width, _ = images.shape
    angle_key, scale_key, shift_key = jax.random.split(key, 3)
    angle = jnp.deg2rad(jax.random.uniform(angle_key, (n,), minval=-10.0, maxval=10.0))
    scale = jax.random.uniform(scale_key, (n,), minval=0.9, maxval=1.1)
    shift = jax.random.uniform(shift_key, (n, 2), minval=-2.0, maxval=2.0)
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    centre_r, centre_c = (height - 1) / 2, (width - 1) / 2

    def warp(image, a, s, d):
        # Inverse map: output pixel -> source coordinate.
        r, c = rows - centre_r - d[0], cols - centre_c - d[1]
        src_r = (jnp.cos(a) * r - jnp.sin(a) * c) / s + centre_r
        src_c = (jnp.sin(a) * r + jnp.cos(a) * c) / s + centre_c
        return jax.scipy.ndimage.map_coordinates(image[..., 0], [src_r, src_c], order=1)[..., None]

    return jax.vmap(warp)(images.astype(jnp.float32), angle, scale, shift)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Each image mirrored left-right with probability 1/2 (for clothes, not digits)."""
    flipped = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flipped, images[:, :, ::-1], images)


def _distort(key: jax.Array, images: jax.Array, distortions: tuple[str, ...]) -> jax.Array:
    """``distortions`` of the batch: "affine" (``random_affine``), "flip" (``random_flip``)."""
    if "affine" in distortions:
        images = random_affine(key, images)
    if "flip" in distortions:
        images = random_flip(jax.random.fold_in(key, 1), images)
    return images


# The restyled digits' cross-entropy, relative to the non-digits' term: at 2 (weight 1
# with not_digits 0.5) MNIST's test accuracy fell 0.4 points, at 0.2 it holds and the
# scans of another collection are still read (benchmarks/RESULTS.md, "not a digit").
RESTYLED_WEIGHT = 0.2


def _batch_loss(params, state: TrainState, images, labels, mask, key, train: bool,
                distortions: tuple[str, ...], not_digits: jax.Array | None = None,
                restyled: jax.Array | None = None, restyled_labels: jax.Array | None = None,
                exposure: float = 0.0):
    """Cross-entropy on the batch's digits; with ``not_digits``, plus ``exposure`` times
    (their cross-entropy to the uniform distribution (outlier exposure: Hendrycks et al.
    2019) + ``RESTYLED_WEIGHT`` x the ``restyled`` digits' cross-entropy), from one
    forward pass."""
    augment_key, dropout_key = jax.random.split(key)
    count = images.shape[0]
    if not_digits is not None:
        images = jnp.concatenate([images, restyled, not_digits])
    images = _distort(augment_key, images, distortions)
    logits = inference.forward(state.module, params, images, train=train,
                               rngs={"dropout": dropout_key})
    logits, extra_logits = logits[:count], logits[count:]
    kind, rubbish = state.criterion
    if kind == "map":
        per_example = paper.map_loss(-logits / state.module.preset.penalty_scale, labels,
                                     rubbish)
    else:
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    weights = mask.astype(jnp.float32)
    loss = jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    if not_digits is not None:
        restyled_logits, outlier_logits = jnp.split(extra_logits, [restyled.shape[0]])
        uniform = jax.nn.logsumexp(outlier_logits, -1) - outlier_logits.mean(-1)
        restyled_loss = optax.softmax_cross_entropy_with_integer_labels(restyled_logits,
                                                                       restyled_labels)
        loss += exposure * (uniform.mean() + RESTYLED_WEIGHT * restyled_loss.mean())
    metrics = {
        "loss_sum": jnp.sum(per_example * weights),
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * weights),
        "count": jnp.sum(weights),
    }
    return loss, metrics


def empty_totals() -> dict[str, jax.Array]:
    return {
        "loss_sum": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.float32),
        "count": jnp.zeros((), jnp.float32),
        "first_bad_step": jnp.full((), -1, jnp.int32),
    }


def train_step(
    carry: tuple[TrainState, dict], step: jax.Array, data: tuple[jax.Array, ...],
    plan: EpochPlan, distortions: tuple[str, ...] = (), exposure: float = 0.0,
) -> tuple[TrainState, dict]:
    """One optimiser step on batch ``step`` of ``plan``; totals accumulate on device.
    ``data`` is (images, labels), and with ``exposure`` the non-digits a batch of as
    many is drawn from (``lenet_jax.outliers``).

    The same function is the body of the scanned epoch and the per-step jit call, so
    both loops compute the same thing.
    """
    state, totals = carry
    images, labels, *not_digits = data
    index = plan.indices[step]
    key = jax.random.fold_in(plan.key, step)
    batch = (images[index], labels[index], plan.mask[step])
    if plan.batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, plan.batch_sharding)
    extra = {}
    if exposure:  # half a batch each of non-digits and restyled digits, drawn at random
        bank, restyled, restyled_labels = not_digits
        half = index.shape[0] // 2
        drawn = jax.random.randint(jax.random.fold_in(key, 2), (half,), 0, bank.shape[0])
        chosen = jax.random.randint(jax.random.fold_in(key, 3), (half,), 0,
                                    restyled.shape[0])
        extra = {"not_digits": bank[drawn], "restyled": restyled[chosen],
                 "restyled_labels": restyled_labels[chosen], "exposure": exposure}
    grad_fn = jax.value_and_grad(_batch_loss, has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, state, *batch, key, True, distortions,
                                     **extra)
    state = state.apply_gradients(grads=grads)
    loss_sum = totals["loss_sum"] + metrics["loss_sum"]
    # A huge but finite loss can overflow the running sum: that is divergence too.
    bad = ~(jnp.isfinite(loss) & jnp.isfinite(loss_sum)) & (totals["first_bad_step"] < 0)
    totals = {
        "loss_sum": loss_sum,
        "correct": totals["correct"] + metrics["correct"],
        "count": totals["count"] + metrics["count"],
        "first_bad_step": jnp.where(bad, state.step - 1, totals["first_bad_step"]),
    }
    return state, totals


# XLA:CPU's fusion emitters vectorise the channel-major elementwise fusions (worth half
# the throughput, benchmarks/RESULTS.md). They fuse Adam's update differently in a loop
# body than in a lone step, so the scan and step loops agree to float32 rounding, not bit
# for bit; a rerun or a resume of the same loop is bit-identical. Other backends refuse
# an XLA:CPU option, so it is given only to the CPU's compiler.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": True}  # stated, not left to a default


def compiler_options() -> dict:
    """The options ``compile_epoch`` compiles with on the default backend."""
    return CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else {}


@functools.partial(jax.jit, static_argnames=("distortions", "exposure"), donate_argnums=0)
def train_epoch_scan(
    state: TrainState, data: tuple[jax.Array, ...], plan: EpochPlan,
    distortions: tuple[str, ...] = (), exposure: float = 0.0,
) -> tuple[TrainState, dict]:
    """A whole epoch as one compiled call."""

    def body(carry, step):
        return train_step(carry, step, data, plan, distortions, exposure), None

    steps = jnp.arange(plan.indices.shape[0], dtype=jnp.int32)
    (state, totals), _ = jax.lax.scan(body, (state, empty_totals()), steps)
    return state, totals


train_step_jit = jax.jit(train_step, static_argnames=("distortions", "exposure"),
                         donate_argnums=0)


def compile_epoch(
    loop: str, state: TrainState, data: tuple[jax.Array, ...], plan: EpochPlan,
    distortions: tuple[str, ...] = (), exposure: float = 0.0,
) -> tuple[EpochRunner, float]:
    """Compile the epoch ahead of time: (run(state, plan, on_step), compile seconds).
    ``loop`` is "scan" (the epoch is one call) or "step" (one call per batch);
    ``distortions`` as ``TrainConfig.distortions``, ``exposure`` as its ``not_digits``
    (then ``data`` ends with the non-digits); ``on_step(n)`` reports progress."""
    start = time.perf_counter()
    steps = plan.indices.shape[0]
    if loop == "scan":
        scan = (train_epoch_scan.lower(state, data, plan, distortions, exposure)
                .compile(compiler_options()))

        def run(state: TrainState, plan: EpochPlan, on_step: Callable | None = None):
            state, totals = scan(state, data, plan)
            (on_step or _ignore)(steps)
            return state, totals
    else:
        step_call = (train_step_jit.lower((state, empty_totals()), jnp.int32(0), data, plan,
                                          distortions, exposure)
                     .compile(compiler_options()))

        def run(state: TrainState, plan: EpochPlan, on_step: Callable | None = None):
            carry = (state, empty_totals())
            for step in range(steps):
                carry = step_call(carry, jnp.int32(step), data, plan)
                (on_step or _ignore)(1)
            return carry

    return run, time.perf_counter() - start


def _ignore(_: int) -> None:
    pass


def to_device(split: Split, mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array]:
    """A split on the device(s): images stay uint8 (4x less memory and traffic),
    normalised inside the compiled step. With a mesh, each device holds a replica
    (MNIST is 47 MB) and each step's batch is what gets split."""
    return replicated(mesh, (split.images, split.labels.astype(np.int32)))


EpochRunner = Callable[[TrainState, EpochPlan, Callable[[int], None] | None],
                       tuple[TrainState, dict]]

# Config fields that change the trajectory: a resumed run must keep them.
RESUME_INVARIANT = ("preset", "task", "strips", "dataset", "batch_size", "optimizer",
                    "learning_rate", "mu", "mu_start_passes", "loss", "rubbish", "init",
                    "weight_decay", "schedule", "warmup_epochs", "seed",
                    "val_size", "augment", "flip", "limit_train", "not_digits")
_FORMER_NAMES = {"preset": "variant", "limit_train": "train_limit"}  # in older checkpoints
# What older checkpoints, without the field, used.
_ADDED_SINCE = {"task": "digits", "strips": 30_000, "weight_decay": 0.0, "flip": False,
                "not_digits": 0.0, "optimizer": "adam", "mu": 0.02, "mu_start_passes": 0,
                "loss": "cross_entropy", "rubbish": 0.0, "init": "preset"}


def check_resumable(saved: dict, config: TrainConfig) -> None:
    """``ResumeMismatchError`` unless ``config`` continues the run whose latest metadata is
    ``saved`` (with a cosine schedule, the epochs too: they shape the schedule)."""
    saved_config = saved.get("config", {})
    fields = RESUME_INVARIANT + (("epochs",) if config.schedule == "cosine" else ())
    for field in fields:
        saved_value = saved_config.get(field, saved_config.get(_FORMER_NAMES.get(field, ""),
                                                               _ADDED_SINCE.get(field)))
        if saved_value != getattr(config, field):
            raise ResumeMismatchError(field, saved_value, getattr(config, field))


def resumed(state: TrainState, config: TrainConfig, checkpoints: checkpoint.RunCheckpoints,
            run_dir: Path, resume: bool, log: Callable[[str], None]) -> tuple[TrainState, int]:
    """(state, epochs done): ``state`` as it is, or with ``resume`` the latest checkpoint's;
    ``RunFinished`` (nothing written) if that checkpoint has all ``config.epochs``."""
    if not resume or checkpoints.latest_epoch() is None:
        return state, 0
    saved = checkpoints.restore_latest()[2]
    check_resumable(saved, config)
    if saved["epoch"] >= config.epochs:
        checkpoints.close()
        raise RunFinished(run_dir, saved["epoch"], config.schedule)
    params, opt_state, saved = checkpoints.restore_latest(
        checkpoint.abstract_on_this_device(state.params),
        checkpoint.abstract_on_this_device(state.opt_state))
    log(f"resuming {run_dir} after epoch {saved['epoch']}")
    return state.replace(params=params, opt_state=opt_state, step=saved["step"]), saved["epoch"]


def run_metadata(config: TrainConfig, dataset: Dataset, record: dict, selection: str,
              rule: rejection.Rule | None) -> dict:
    """What a checkpoint carries so that it restores and evaluates on its own."""
    preset = models.get_preset(config.preset)
    return {
        "preset": preset.name,
        "task": config.task,
        "dataset": dataset.name,
        "class_names": list(dataset.class_names),
        "input_shape": list(preset.input_shape),
        "normalisation": {"mean": preset.mean, "std": preset.std, "fit": preset.fit},
        "epoch": record["epoch"],
        "step": record["step"],
        "config": dataclasses.asdict(config),
        "loop": config.loop,
        "metrics": record,
        "selection_split": "validation" if selection == "val_accuracy" else "test",
        "rejection": rule.to_json() if rule is not None else None,
        checkpoint.SELECTION_METRIC: record[selection],
    }


def _sdlm_words(c: TrainConfig) -> str:
    if not c.mu_start_passes:
        return f"SDLM (mu {c.mu:g})"
    return f"SDLM (mu {paper.START_MU:g} for {c.mu_start_passes} passes, then {c.mu:g})"


def _describe(config: TrainConfig, dataset: Dataset, sizes: tuple[int, int, int],
              devices: int, compile_seconds: float) -> str:
    c = config
    return (f"{c.preset} on {dataset.name}: {sizes[0]} train / {sizes[1]} validation / "
            f"{sizes[2]} test, batch {c.batch_size}, "
            f"{_sdlm_words(c) if c.optimizer == 'sdlm' else 'Adam'} "
            f"{c.learning_rate:g} {c.schedule}"
            f"{f', MAP loss j={c.rubbish:g}' if c.loss == 'map' else ''}"
            f"{', paper init' if c.init == 'paper' else ''}"
            f"{f', weight decay {c.weight_decay:g}' if c.weight_decay else ''}"
            f"{', distortions' if c.augment else ''}{', flips' if c.flip else ''}"
            f"{f', non-digits x{c.not_digits:g}' if c.not_digits else ''}, "
            f"loop '{c.loop}' on {jax.default_backend()} x{devices}, compiled in "
            f"{compile_seconds:.1f}s")


def _epoch_line(record: dict, epochs: int) -> str:
    val = f"val {100 * record['val_accuracy']:.2f}%  " if "val_accuracy" in record else ""
    return (f"epoch {record['epoch']:3d}/{epochs}  loss {record['train_loss']:.4f}  "
            f"train {100 * record['train_accuracy']:.2f}%  {val}"
            f"test {100 * record['test_accuracy']:.2f}%  "
            f"{record['images_per_second']:,.0f} img/s  {record['epoch_seconds']:.1f}s")


def log_to_terminal(line: str) -> None:
    tqdm.write(line, file=sys.stdout)


def train_and_evaluate(
    config: TrainConfig, dataset: Dataset, run_dir: Path, resume: bool = False,
    progress: bool = True, log: Callable[[str], None] = log_to_terminal,
    writes_the_run: bool = True,
) -> dict:
    """Train ``config.epochs`` epochs, checkpointing each; returns the last epoch's record.
    Resuming a run that already has ``config.epochs`` raises ``RunFinished``, having
    written nothing. ``writes_the_run``: this process writes the run's metrics, plots and
    links (of several processes, only one; Orbax coordinates the checkpoints itself)."""
    # Set up: the settings, the devices, the data on the device(s), the checkpoints.
    config.validate()
    run_dir = Path(run_dir)
    mesh = make_mesh(config.devices, config.batch_size)
    train, val = split_validation(dataset.train, config.val_size)
    if config.limit_train:
        train = train.take(slice(0, config.limit_train))
    if val is None:
        log("warning: with no validation slice, runs/best is selected on the test set (as "
            "the tutorials do); its test accuracy is then an optimistic estimate")
    train_data, test_data = to_device(train, mesh), to_device(dataset.test, mesh)
    if config.not_digits:
        with phase("init"):
            train_data += replicated(mesh, (outliers.cached_bank(),
                                            *outliers.cached_restyled(train.images, train.labels)))
    val_data = to_device(val, mesh) if val is not None else None
    selection = "val_accuracy" if val is not None else "test_accuracy"
    steps = steps_per_epoch(len(train), config.batch_size)
    schedule = learning_rate_schedule(config, steps)

    def plan(epoch: int) -> EpochPlan:
        return plan_epoch(config.seed, epoch, len(train), config.batch_size, mesh)

    # A fresh state, or with `resume` the latest checkpoint's.
    checkpoints = checkpoint.RunCheckpoints(run_dir, writes_links=writes_the_run)
    with phase("init"):
        state, start_epoch = resumed(create_train_state(config, steps), config, checkpoints,
                                     run_dir, resume, log)
        state = replicated(mesh, state)
    with phase("compile"):
        run_epoch, compile_seconds = compile_epoch(config.loop, state, train_data,
                                                   plan(start_epoch), config.distortions(),
                                                   config.not_digits)
    log(_describe(config, dataset, (len(train), len(val) if val else 0, len(dataset.test)),
                  mesh.size if mesh else 1, compile_seconds))
    metrics_log = MetricsLog(run_dir, resume_epoch=start_epoch, write=writes_the_run,
                             config=dataclasses.asdict(config), selection=selection)
    best = max((r.get(selection, -np.inf) for r in metrics_log.records), default=-np.inf)
    bar = tqdm(total=config.epochs * steps, initial=start_epoch * steps, unit="step",
               disable=not progress, leave=False, dynamic_ncols=True)

    # Each epoch: train, evaluate, save, log.
    record: dict = {}
    with closing_at_the_end(bar, checkpoints, metrics_log):
        for epoch in range(start_epoch, config.epochs):
            with phase("work"):
                start = time.perf_counter()
                if config.optimizer == "sdlm":  # h re-estimated before each pass (Sec. III-C)
                    state = estimate_curvature(state, train_data[0], config.seed, epoch)
                state, totals = run_epoch(state, plan(epoch), bar.update)
                totals = jax.device_get(totals)  # the epoch's only host sync
                seconds = time.perf_counter() - start
                if totals["first_bad_step"] >= 0 or not np.isfinite(totals["loss_sum"]):
                    raise TrainingDivergedError(int(totals["first_bad_step"]), epoch + 1)
                record = {
                    "epoch": epoch + 1, "step": int(state.step),
                    "train_loss": float(totals["loss_sum"] / totals["count"]),
                    "train_accuracy": float(totals["correct"] / totals["count"]),
                    "images_per_second": len(train) / seconds, "epoch_seconds": seconds,
                    "learning_rate": learning_rate_at(schedule, int(state.step) - 1),
                }
                # The map statistics of the "not a digit" rule come from the same pass.
                with_rule = val_data is not None or config.loss == "map"
                scores = {name: inference.evaluate(state.module, state.params, *split,
                                                   statistics=with_rule)
                          for name, split in (("val", val_data), ("test", test_data))
                          if split is not None}
                for name, split_scores in scores.items():
                    record |= {f"{name}_loss": split_scores["loss"],
                               f"{name}_accuracy": split_scores["accuracy"]}
                # The rule, fitted only for an epoch that becomes runs/best (Orbax names
                # the latest of equals the best).
                rule = None
                if config.loss == "map":  # the criterion's own rubbish class: nothing to fit
                    rule = rejection.rubbish_rule(config.rubbish,
                                                  state.module.preset.penalty_scale)
                elif val_data is not None and record[selection] >= best:
                    best = record[selection]
                    val_scores = scores["val"]
                    rule = (rejection.fit_energy(val_scores["logits"], val.images)
                            if config.not_digits
                            else rejection.fit(val_scores["statistics"], np.asarray(val_data[1])))
                if rule is not None:
                    test_scores = scores["test"]
                    record["test_rejected"] = float(
                        rule.rejects(test_scores["logits"], test_scores["statistics"],
                                     dataset.test.images).mean())
                record["compile_seconds"] = compile_seconds
            with phase("save"):
                checkpoints.save(epoch + 1, state.params, state.opt_state,
                                 run_metadata(config, dataset, record, selection, rule))
                metrics_log.append(record)
                checkpoint.point_workdir_best(run_dir.parent, run_dir, writes_the_run)
            log(_epoch_line(record, config.epochs))
    return record


@contextlib.contextmanager
def closing_at_the_end(bar: tqdm, checkpoints: checkpoint.RunCheckpoints,
                       metrics_log: MetricsLog) -> Iterator[None]:
    """The epochs' loop: however it ends, the bar closed and what was saved on disk."""
    try:
        yield
    finally:
        bar.close()
        with phase("save"):
            checkpoints.close()
            metrics_log.close()
