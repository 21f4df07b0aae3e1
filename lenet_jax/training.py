"""Training: a pure ``train_step``, epochs as one ``lax.scan`` or per-step jit calls,
evaluation in one call, and ``train_and_evaluate`` that ties it to checkpoints and logs.

Randomness is a function of (seed, epoch, step) alone, so a run resumed from any
epoch's checkpoint retraces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable
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

from lenet_jax import checkpoint, distributed, models, rejection
from lenet_jax.config import ConfigError, TrainConfig, flag
from lenet_jax.data import Dataset, Split, split_validation
from lenet_jax.reporting import MetricsLog
from lenet_jax.runtime import phase


class TrainState(train_state.TrainState):
    module: models.LeNet = struct.field(pytree_node=False)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; ``step`` is the first optimiser step that did."""

    def __init__(self, step: int, epoch: int):
        super().__init__(f"loss became NaN/Inf at step {step} (epoch {epoch})")
        self.step, self.epoch = step, epoch


class RunFinished(Exception):  # noqa: N818 (an outcome, not an error)
    """``--resume`` of a run that has already trained the epochs asked for."""

    def __init__(self, run_dir: Path, epoch: int, schedule: str):
        longer = (f"resume with --epochs larger than {epoch}" if schedule != "cosine" else
                  f"its cosine schedule ends at epoch {epoch}, so train a new run (--name, "
                  "or --overwrite) with more --epochs")
        super().__init__(f"{run_dir} has already trained {epoch} epochs; nothing to do. To "
                         f"train longer, {longer}")
        self.run_dir, self.epoch = run_dir, epoch


def make_mesh(devices: int = 0, batch_size: int = 0) -> Mesh | None:
    """A 1-D mesh ("data") over the first ``devices`` devices (0: all of them, over
    every host); None when that is a single device, so nothing is sharded. The global
    ``batch_size`` must divide over them."""
    available = jax.devices()
    count = devices or len(available)
    if count > len(available):
        raise ConfigError(f"--devices {count}: only {len(available)} visible")
    if batch_size % count:
        raise ConfigError(f"--batch-size {batch_size} does not divide over {count} devices")
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
    """Adam with a constant rate, or linear warmup then cosine decay to 0 at the end;
    with weight decay as PyTorch's ``Adam(weight_decay=)`` does it."""
    config = config.resolved()
    if config.schedule == "cosine":
        return _adam(config.learning_rate, config.weight_decay,
                     config.epochs * num_steps_per_epoch,
                     int(config.warmup_epochs * num_steps_per_epoch))
    return _adam(config.learning_rate, config.weight_decay)


# One object per recipe: train states built alike have equal static parts, so the
# compiled epoch is reused instead of traced and compiled again.
@functools.cache
def _adam(learning_rate: float, weight_decay: float = 0.0, cosine_steps: int = 0,
          warmup_steps: int = 0) -> optax.GradientTransformation:
    if cosine_steps:
        adam = optax.adam(optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                                             cosine_steps))
    else:
        adam = optax.adam(learning_rate)
    if not weight_decay:
        return adam
    # L2 added to the gradient before Adam's moments (coupled, as PyTorch's Adam), which
    # is what the write-ups used; not AdamW's decoupled decay.
    return optax.chain(optax.add_decayed_weights(weight_decay), adam)


@functools.cache
def training_module(preset: str) -> models.LeNet:
    """The model training uses: the convolutions' hand-written gradient (``ops.conv2d``)."""
    return models.LeNet(models.get_preset(preset), custom_grad=True)


def create_train_state(config: TrainConfig, num_steps_per_epoch: int) -> TrainState:
    """Fresh parameters (``models.init_params``'s, from ``config.seed``) and optimiser
    state, in compiled calls."""
    module = training_module(config.preset)
    params = models.init_params(models.LeNet(module.preset), _init_key(config.seed))
    return _with_optimizer(module, make_optimizer(config, num_steps_per_epoch), params)


@jax.jit
def _init_key(seed: jax.Array) -> jax.Array:
    init_key, _ = jax.random.split(jax.random.key(seed))
    return init_key


@functools.partial(jax.jit, static_argnums=(0, 1))
def _with_optimizer(module: models.LeNet, tx: optax.GradientTransformation,
                    params: Any) -> TrainState:
    return TrainState.create(apply_fn=module.apply, params=params, tx=tx, module=module)


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


def _batch_loss(params, state: TrainState, images, labels, mask, key, train: bool,
                distortions: tuple[str, ...]):
    augment_key, dropout_key = jax.random.split(key)
    images = _distort(augment_key, images, distortions)
    x = models.preprocess(images, state.module.preset)
    logits = state.apply_fn({"params": params}, x, train=train, rngs={"dropout": dropout_key})
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    weights = mask.astype(jnp.float32)
    loss = jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)
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
    carry: tuple[TrainState, dict], step: jax.Array, data: tuple[jax.Array, jax.Array],
    plan: EpochPlan, distortions: tuple[str, ...] = (),
) -> tuple[TrainState, dict]:
    """One optimiser step on batch ``step`` of ``plan``; totals accumulate on device.

    The same function is the body of the scanned epoch and the per-step jit call, so
    both loops compute the same thing.
    """
    state, totals = carry
    images, labels = data
    index = plan.indices[step]
    batch = (images[index], labels[index], plan.mask[step])
    if plan.batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, plan.batch_sharding)
    key = jax.random.fold_in(plan.key, step)
    grad_fn = jax.value_and_grad(_batch_loss, has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, state, *batch, key, True, distortions)
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
# for bit; a rerun or a resume of the same loop is bit-identical.
COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": True}  # stated, not left to a default


@functools.partial(jax.jit, static_argnames="distortions", donate_argnums=0,
                   compiler_options=COMPILER_OPTIONS)
def train_epoch_scan(
    state: TrainState, data: tuple[jax.Array, jax.Array], plan: EpochPlan,
    distortions: tuple[str, ...] = (),
) -> tuple[TrainState, dict]:
    """A whole epoch as one compiled call."""

    def body(carry, step):
        return train_step(carry, step, data, plan, distortions), None

    steps = jnp.arange(plan.indices.shape[0], dtype=jnp.int32)
    (state, totals), _ = jax.lax.scan(body, (state, empty_totals()), steps)
    return state, totals


train_step_jit = jax.jit(train_step, static_argnames="distortions", donate_argnums=0,
                         compiler_options=COMPILER_OPTIONS)


def _drive(
    loop: str, scan_call: Callable, step_call: Callable, state: TrainState, plan: EpochPlan,
    on_step: Callable[[int], None] | None,
) -> tuple[TrainState, dict]:
    """One epoch: ``scan_call(state, plan)`` once, or ``step_call(carry, step, plan)``
    per batch from Python; ``on_step(n)`` reports progress."""
    on_step = on_step or (lambda _: None)
    steps = plan.indices.shape[0]
    if loop == "scan":
        state, totals = scan_call(state, plan)
        on_step(steps)
        return state, totals
    carry = (state, empty_totals())
    for step in range(steps):
        carry = step_call(carry, jnp.int32(step), plan)
        on_step(1)
    return carry


# Images per chunk when predicting: on CPU larger chunks' im2col matrices outgrow the
# caches (the sweep: benchmarks/RESULTS.md).
EVAL_BATCH_SIZE = {"cpu": 128}


def _in_chunks(of_chunk: Callable, images: jax.Array, batch_size: int | None) -> Any:
    """``of_chunk`` over uint8 images (N, 28, 28, 1) in chunks of ``batch_size`` (default:
    ``EVAL_BATCH_SIZE`` for the backend, else 1,000), as one ``lax.map``; its outputs
    (arrays of one row per image) joined back to N rows."""
    batch_size = batch_size or EVAL_BATCH_SIZE.get(jax.default_backend(), 1000)
    n = images.shape[0]
    chunks = math.ceil(n / batch_size)
    padded = jnp.pad(images, ((0, chunks * batch_size - n), (0, 0), (0, 0), (0, 0)))
    padded = padded.reshape(chunks, batch_size, *images.shape[1:])
    outputs = jax.lax.map(of_chunk, padded)
    return jax.tree.map(lambda out: out.reshape(chunks * batch_size, -1)[:n], outputs)


@functools.partial(jax.jit, static_argnames=("module", "batch_size"))
def predict_logits(
    module: models.LeNet, params: Any, images: jax.Array, batch_size: int | None = None
) -> jax.Array:
    """Logits for uint8 images (N, 28, 28, 1) in one compiled call, in chunks."""
    def of_chunk(chunk):
        return module.apply({"params": params}, models.preprocess(chunk, module.preset))

    return _in_chunks(of_chunk, images, batch_size)


def _logits_and_statistics(module: models.LeNet, params: Any, images: jax.Array,
                           batch_size: int | None) -> tuple[jax.Array, jax.Array]:
    def of_chunk(chunk):
        logits, kept = module.apply({"params": params}, models.preprocess(chunk, module.preset),
                                    mutable=["maps"])
        return logits, rejection.map_statistics(kept["maps"]["layers"])

    return _in_chunks(of_chunk, images, batch_size)


@functools.partial(jax.jit, static_argnames=("module", "batch_size"))
def predict(
    module: models.LeNet, params: Any, images: jax.Array, batch_size: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """(logits, the map statistics the rejection rule reads) in one compiled call."""
    return _logits_and_statistics(module, params, images, batch_size)


def evaluate(module: models.LeNet, params: Any, split: Split | tuple) -> dict:
    """Mean cross-entropy, accuracy and each image's map statistics (for the rejection
    rule) over a whole split, in one compiled call."""
    images, labels = split if isinstance(split, tuple) else (split.images, split.labels)
    loss, accuracy, statistics = _evaluation(module, params, jnp.asarray(images),
                                             jnp.asarray(labels))
    return {"loss": float(loss), "accuracy": float(accuracy),
            "statistics": np.asarray(statistics)}


@functools.partial(jax.jit, static_argnames="module")
def _evaluation(module: models.LeNet, params: Any, images: jax.Array,
                labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    logits, statistics = _logits_and_statistics(module, params, images, None)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == labels), statistics


def to_device(split: Split, mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array]:
    """A split on the device(s): images stay uint8 (4x less memory and traffic),
    normalised inside the compiled step. With a mesh, each device holds a replica
    (MNIST is 47 MB) and each step's batch is what gets split."""
    return replicated(mesh, (split.images, split.labels.astype(np.int32)))


EpochRunner = Callable[[TrainState, EpochPlan, Callable[[int], None] | None],
                       tuple[TrainState, dict]]


def compile_epoch(
    loop: str, state: TrainState, data: tuple[jax.Array, jax.Array], plan: EpochPlan,
    distortions: tuple[str, ...] = (),
) -> tuple[EpochRunner, float]:
    """Compile the epoch ahead of time: (run(state, plan, on_step), compile seconds).
    ``loop`` is "scan" (the epoch is one call) or "step" (one call per batch);
    ``distortions`` as ``TrainConfig.distortions``."""
    start = time.perf_counter()
    if loop == "scan":
        compiled = train_epoch_scan.lower(state, data, plan, distortions).compile()
        scan_call, step_call = (lambda s, p: compiled(s, data, p)), None
    else:
        compiled = train_step_jit.lower((state, empty_totals()), jnp.int32(0), data, plan,
                                        distortions).compile()
        scan_call, step_call = None, (lambda c, i, p: compiled(c, i, data, p))
    seconds = time.perf_counter() - start
    return functools.partial(_drive, loop, scan_call, step_call), seconds


# Config fields that change the trajectory: a resumed run must keep them.
_RESUME_INVARIANT = ("preset", "dataset", "batch_size", "learning_rate", "weight_decay",
                     "schedule", "warmup_epochs", "seed", "val_size", "augment", "flip",
                     "limit_train")
_FORMER_NAMES = {"preset": "variant", "limit_train": "train_limit"}  # in older checkpoints
# What older checkpoints, without the field, used.
_ADDED_SINCE = {"weight_decay": 0.0, "flip": False}


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    saved_config = saved.get("config", {})
    fields = _RESUME_INVARIANT + (("epochs",) if config.schedule == "cosine" else ())
    for field in fields:
        saved_value = saved_config.get(field, saved_config.get(_FORMER_NAMES.get(field, ""),
                                                               _ADDED_SINCE.get(field)))
        if saved_value != getattr(config, field):
            raise checkpoint.CheckpointError(
                f"cannot resume: the run was trained with {flag(field)[2:]}={saved_value!r},"
                f" this command asks for {getattr(config, field)!r}"
            )


@dataclasses.dataclass
class _Run:
    """What a training run works with, set up once: its settings, devices, data on the
    device(s) and checkpoints."""

    config: TrainConfig
    dataset: Dataset
    run_dir: Path
    mesh: Mesh | None
    num_train: int
    train: tuple[jax.Array, jax.Array]
    val: tuple[jax.Array, jax.Array] | None
    test: tuple[jax.Array, jax.Array]
    checkpoints: checkpoint.RunCheckpoints

    def plan(self, epoch: int) -> EpochPlan:
        return plan_epoch(self.config.seed, epoch, self.num_train, self.config.batch_size,
                          self.mesh)


def _set_up(config: TrainConfig, dataset: Dataset, run_dir: Path,
            log: Callable[[str], None]) -> _Run:
    if problem := config.problem():
        raise ConfigError(problem)
    config = config.resolved()
    mesh = make_mesh(config.devices, config.batch_size)
    train, val = split_validation(dataset.train, config.val_size)
    if config.limit_train:
        train = train.take(slice(0, config.limit_train))
    if val is None:
        log("warning: --val-size 0 selects runs/best on the test set (as the tutorials do);"
            " its test accuracy is then an optimistic estimate")
    return _Run(config, dataset, run_dir, mesh, len(train), to_device(train, mesh),
                to_device(val, mesh) if val is not None else None, to_device(dataset.test, mesh),
                checkpoint.RunCheckpoints(run_dir))


def _initial_state(run: _Run, resume: bool, log: Callable[[str], None]) -> tuple[TrainState, int]:
    """A fresh train state, or with ``resume`` the latest checkpoint's; and its epoch."""
    config = run.config
    state = create_train_state(config, steps_per_epoch(run.num_train, config.batch_size))
    if not resume or run.checkpoints.latest_epoch() is None:
        return replicated(run.mesh, state), 0
    saved = run.checkpoints.restore_latest()[2]
    _check_resumable(saved, config)
    if saved["epoch"] >= config.epochs:
        run.checkpoints.close()
        raise RunFinished(run.run_dir, saved["epoch"], config.schedule)
    params, opt_state, saved = run.checkpoints.restore_latest(
        checkpoint.abstract_on_this_device(state.params),
        checkpoint.abstract_on_this_device(state.opt_state),
    )
    state = state.replace(params=params, opt_state=opt_state, step=saved["step"])
    log(f"resuming {run.run_dir} after epoch {saved['epoch']}")
    return replicated(run.mesh, state), saved["epoch"]


def _train_epoch(run: _Run, run_epoch: EpochRunner, state: TrainState, epoch: int,
                 on_step: Callable[[int], None]) -> tuple[TrainState, dict]:
    """Epoch ``epoch`` (0-based); the record of its training metrics."""
    start = time.perf_counter()
    state, totals = run_epoch(state, run.plan(epoch), on_step)
    totals = jax.device_get(totals)  # the epoch's only host sync
    seconds = time.perf_counter() - start
    if totals["first_bad_step"] >= 0 or not np.isfinite(totals["loss_sum"]):
        raise TrainingDivergedError(int(totals["first_bad_step"]), epoch + 1)
    return state, {
        "epoch": epoch + 1,
        "step": int(state.step),
        "train_loss": float(totals["loss_sum"] / totals["count"]),
        "train_accuracy": float(totals["correct"] / totals["count"]),
        "images_per_second": run.num_train / seconds,
        "epoch_seconds": seconds,
    }


def _evaluate_splits(run: _Run, state: TrainState) -> tuple[dict, rejection.Rule | None]:
    """Validation (if held out) and test metrics, the one that selects runs/best, and the
    "not a digit" rule fitted on the validation slice (None without one)."""
    record, rule = {}, None
    if run.val is not None:
        val = evaluate(state.module, state.params, run.val)
        record |= {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}
        rule = rejection.fit(val["statistics"], np.asarray(run.val[1]))
    test = evaluate(state.module, state.params, run.test)
    record |= {"test_loss": test["loss"], "test_accuracy": test["accuracy"]}
    if rule is not None:
        record["test_rejected"] = float(rule.rejects(test["statistics"]).mean())
    return record, rule


def _metadata(run: _Run, record: dict, rule: rejection.Rule | None) -> dict:
    """What a checkpoint carries so that it restores and evaluates on its own."""
    preset = models.get_preset(run.config.preset)
    selection_split = "validation" if run.val is not None else "test"
    return {
        "preset": preset.name,
        "dataset": run.dataset.name,
        "class_names": list(run.dataset.class_names),
        "input_shape": list(preset.input_shape),
        "normalisation": {"mean": preset.mean, "std": preset.std, "fit": preset.fit},
        "epoch": record["epoch"],
        "step": record["step"],
        "config": dataclasses.asdict(run.config),
        "loop": run.config.loop,
        "metrics": record,
        "selection_split": selection_split,
        "rejection": rule.to_json() if rule is not None else None,
        checkpoint.SELECTION_METRIC: record["val_accuracy" if run.val is not None
                                            else "test_accuracy"],
    }


def _describe(run: _Run, compile_seconds: float) -> str:
    c, val = run.config, run.val
    return (f"{c.preset} on {run.dataset.name}: {run.num_train} train / "
            f"{len(val[1]) if val is not None else 0} validation / {len(run.dataset.test)} "
            f"test, batch {c.batch_size}, Adam {c.learning_rate:g} {c.schedule}"
            f"{f', weight decay {c.weight_decay:g}' if c.weight_decay else ''}"
            f"{', distortions' if c.augment else ''}{', flips' if c.flip else ''}, "
            f"loop '{c.loop}' on "
            f"{jax.default_backend()} x{run.mesh.size if run.mesh else 1}, compiled in "
            f"{compile_seconds:.1f}s")


def _epoch_line(record: dict, epochs: int) -> str:
    val = f"val {100 * record['val_accuracy']:.2f}%  " if "val_accuracy" in record else ""
    return (f"epoch {record['epoch']:3d}/{epochs}  loss {record['train_loss']:.4f}  "
            f"train {100 * record['train_accuracy']:.2f}%  {val}"
            f"test {100 * record['test_accuracy']:.2f}%  "
            f"{record['images_per_second']:,.0f} img/s  {record['epoch_seconds']:.1f}s")


def _log_to_terminal(line: str) -> None:
    tqdm.write(line, file=sys.stdout)


def train_and_evaluate(
    config: TrainConfig, dataset: Dataset, run_dir: Path, resume: bool = False,
    progress: bool = True, log: Callable[[str], None] = _log_to_terminal,
) -> dict:
    """Train ``config.epochs`` epochs, checkpointing each; returns the last epoch's record.
    Resuming a run that already has ``config.epochs`` raises ``RunFinished``, having
    written nothing."""
    run = _set_up(config, dataset, Path(run_dir), log)
    config = run.config
    with phase("init"):
        state, start_epoch = _initial_state(run, resume, log)
    with phase("compile"):
        run_epoch, compile_seconds = compile_epoch(config.loop, state, run.train,
                                                   run.plan(start_epoch), config.distortions())
    log(_describe(run, compile_seconds))
    metrics_log = MetricsLog(run.run_dir, resume_epoch=start_epoch,
                             write=distributed.writes_the_run())
    steps = steps_per_epoch(run.num_train, config.batch_size)
    bar = tqdm(total=config.epochs * steps, initial=start_epoch * steps, unit="step",
               disable=not progress, leave=False, dynamic_ncols=True)
    record: dict = {}
    try:
        for epoch in range(start_epoch, config.epochs):
            with phase("work"):
                state, record = _train_epoch(run, run_epoch, state, epoch, bar.update)
                scores, rule = _evaluate_splits(run, state)
                record |= scores | {"compile_seconds": compile_seconds}
            with phase("save"):
                run.checkpoints.save(epoch + 1, state.params, state.opt_state,
                                     _metadata(run, record, rule))
                metrics_log.append(record)
                checkpoint.point_workdir_best(run.run_dir.parent, run.run_dir)
            log(_epoch_line(record, config.epochs))
    finally:
        bar.close()
        with phase("save"):
            run.checkpoints.close()
            metrics_log.close()
    return record
