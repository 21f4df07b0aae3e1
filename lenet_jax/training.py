"""Training: a pure ``train_step``, epochs as one ``lax.scan`` or per-step jit calls,
evaluation in one call, and ``train_and_evaluate`` that ties it to checkpoints and logs.

Randomness is a function of (seed, epoch, step) alone, so a run resumed from any
epoch's checkpoint retraces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
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

from lenet_jax import checkpoint, models
from lenet_jax.data import Dataset, Split, split_validation
from lenet_jax.reporting import MetricsLog


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    variant: str = "original"
    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 64
    # None: the preset's recipe (see ``resolved``).
    learning_rate: float | None = None
    schedule: str | None = None  # "constant" | "cosine" (warmup, then decay to 0)
    warmup_epochs: float = 0.0
    seed: int = 0
    val_size: int = 5000  # held out from the end of train; 0 selects on test
    augment: bool | None = None  # random affine distortions on device
    train_limit: int = 0  # use only the first N training images (quick trials); 0: all
    devices: int = 0  # data-parallel over this many devices; 0: all visible
    loop: str = "auto"  # "scan" (epoch = one call) | "step" (one call per batch) | "auto"

    def resolved(self) -> TrainConfig:
        """This config with the preset's recipe filled in where a field is None."""
        preset = models.get_preset(self.variant)
        return dataclasses.replace(
            self,
            learning_rate=self.learning_rate or preset.learning_rate,
            schedule=self.schedule or preset.schedule,
            augment=preset.augment if self.augment is None else self.augment,
        )


class TrainState(train_state.TrainState):
    module: models.LeNet = struct.field(pytree_node=False)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf; ``step`` is the first optimiser step that did."""

    def __init__(self, step: int, epoch: int):
        super().__init__(f"loss became NaN/Inf at step {step} (epoch {epoch})")
        self.step, self.epoch = step, epoch


# Measured on 2 CPU cores, batch 64, 55,000 images, one epoch (train.py --loop ...):
# scan 17,377 img/s vs per-step 13,885 (original), 21,253 vs 9,612 (relu_maxpool).
# On a GPU the scan also removes one dispatch per batch.
AUTO_LOOP = {"cpu": "scan", "gpu": "scan", "cuda": "scan", "rocm": "scan", "tpu": "scan"}


def resolve_loop(loop: str, backend: str | None = None) -> str:
    """The loop strategy for ``loop`` on ``backend``: "auto" picks the measured faster."""
    if loop != "auto":
        return loop
    return AUTO_LOOP.get(backend or jax.default_backend(), "scan")


def make_mesh(devices: int = 0) -> Mesh | None:
    """A 1-D mesh ("data") over the first ``devices`` devices (0: all of them, over
    every host); None when that is a single device, so nothing is sharded."""
    available = jax.devices()
    count = devices or len(available)
    if count > len(available):
        raise ValueError(f"asked for {count} devices, {len(available)} visible")
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
    """Adam with a constant rate, or linear warmup then cosine decay to 0 at the end."""
    config = config.resolved()
    if config.schedule == "cosine":
        total = config.epochs * num_steps_per_epoch
        warmup = int(config.warmup_epochs * num_steps_per_epoch)
        rate = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, total)
        return optax.adam(rate)
    return optax.adam(config.learning_rate)


def create_train_state(config: TrainConfig, num_steps_per_epoch: int) -> TrainState:
    module, _ = models.create_model(config.variant)
    init_key, _ = jax.random.split(jax.random.key(config.seed))
    params = models.init_params(module, init_key)
    return TrainState.create(
        apply_fn=module.apply, params=params, tx=make_optimizer(config, num_steps_per_epoch),
        module=module,
    )


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
    key: jax.Array, num_examples: int, batch_size: int, mesh: Mesh | None = None
) -> EpochPlan:
    if mesh is not None:
        if batch_size % mesh.size:
            raise ValueError(f"batch size {batch_size} does not divide over {mesh.size} devices")
        plan = jax.jit(_plan, static_argnums=(1, 2), out_shardings=NamedSharding(mesh, P()))(
            key, num_examples, batch_size
        )
        return plan.replace(batch_sharding=NamedSharding(mesh, P("data")))
    return _plan(key, num_examples, batch_size)


def _plan(key: jax.Array, num_examples: int, batch_size: int) -> EpochPlan:
    order_key, step_key = jax.random.split(key)
    steps = steps_per_epoch(num_examples, batch_size)
    order = jax.random.permutation(order_key, num_examples).astype(jnp.int32)
    padding = steps * batch_size - num_examples
    indices = jnp.concatenate([order, jnp.zeros((padding,), jnp.int32)])
    mask = jnp.arange(steps * batch_size) < num_examples
    return EpochPlan(indices.reshape(steps, batch_size), mask.reshape(steps, batch_size), step_key)


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


def _batch_loss(params, state: TrainState, images, labels, mask, key, train: bool, augment: bool):
    augment_key, dropout_key = jax.random.split(key)
    if augment:
        images = random_affine(augment_key, images)
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
    plan: EpochPlan, augment: bool = False,
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
    (loss, metrics), grads = grad_fn(state.params, state, *batch, key, True, augment)
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


# XLA:CPU's fusion emitters (its default) vectorise the channel-major network's
# elementwise fusions: the scanned epoch of `original` ran at 11,715 img/s without them
# and 17,631 with them. They fuse Adam's update differently inside a loop body than in a
# lone step, so a scanned epoch and the same steps jit'd one by one agree to float32
# rounding, not bit for bit (a rerun or a resume of the same loop is bit-identical).
COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": True}  # stated, not left to a default


@functools.partial(jax.jit, static_argnames="augment", donate_argnums=0,
                   compiler_options=COMPILER_OPTIONS)
def train_epoch_scan(
    state: TrainState, data: tuple[jax.Array, jax.Array], plan: EpochPlan, augment: bool = False
) -> tuple[TrainState, dict]:
    """A whole epoch as one compiled call."""

    def body(carry, step):
        return train_step(carry, step, data, plan, augment), None

    steps = jnp.arange(plan.indices.shape[0], dtype=jnp.int32)
    (state, totals), _ = jax.lax.scan(body, (state, empty_totals()), steps)
    return state, totals


train_step_jit = jax.jit(train_step, static_argnames="augment", donate_argnums=0,
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


def run_epoch(
    state: TrainState, data: tuple[jax.Array, jax.Array], plan: EpochPlan, loop: str,
    augment: bool = False, on_step: Callable[[int], None] | None = None,
) -> tuple[TrainState, dict]:
    """One epoch with the ``loop`` strategy ("scan" or "step"), compiled on first use."""
    return _drive(loop, lambda s, p: train_epoch_scan(s, data, p, augment),
                  lambda c, i, p: train_step_jit(c, i, data, p, augment), state, plan, on_step)


# Images per chunk when predicting. On 2 CPU cores the 10,000 MNIST test images took
# (`original`, s) 0.141 / 0.135 / 0.167 / 0.193 / 0.355 in chunks of 64 / 128 / 256 /
# 500 / 1,000: larger chunks' im2col matrices outgrow the caches.
EVAL_BATCH_SIZE = {"cpu": 128}


@functools.partial(jax.jit, static_argnames=("module", "batch_size"))
def predict_logits(
    module: models.LeNet, params: Any, images: jax.Array, batch_size: int | None = None
) -> jax.Array:
    """Logits for uint8 images (N, 28, 28, 1) in one compiled call, in chunks of
    ``batch_size`` (default: ``EVAL_BATCH_SIZE`` for the backend, else 1,000)."""
    batch_size = batch_size or EVAL_BATCH_SIZE.get(jax.default_backend(), 1000)
    n = images.shape[0]
    chunks = math.ceil(n / batch_size)
    padded = jnp.pad(images, ((0, chunks * batch_size - n), (0, 0), (0, 0), (0, 0)))
    padded = padded.reshape(chunks, batch_size, *images.shape[1:])

    def logits_of(chunk):
        return module.apply({"params": params}, models.preprocess(chunk, module.preset))

    return jax.lax.map(logits_of, padded).reshape(chunks * batch_size, -1)[:n]


def evaluate(module: models.LeNet, params: Any, split: Split | tuple) -> dict[str, float]:
    """Mean cross-entropy and accuracy over a whole split."""
    images, labels = split if isinstance(split, tuple) else (split.images, split.labels)
    logits = predict_logits(module, params, jnp.asarray(images))
    labels = jnp.asarray(labels)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return {"loss": float(loss), "accuracy": float(accuracy)}


def to_device(split: Split, mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array]:
    """A split on the device(s): images stay uint8 (4x less memory and traffic),
    normalised inside the compiled step. With a mesh, each device holds a replica
    (MNIST is 47 MB) and each step's batch is what gets split."""
    return replicated(mesh, (split.images, split.labels.astype(np.int32)))


def compile_epoch(
    loop: str, state: TrainState, data: tuple[jax.Array, jax.Array], plan: EpochPlan,
    augment: bool,
) -> tuple[Callable[..., tuple[TrainState, dict]], float]:
    """Compile the epoch ahead of time: (run(state, plan, on_step), compile seconds)."""
    start = time.perf_counter()
    if loop == "scan":
        compiled = train_epoch_scan.lower(state, data, plan, augment).compile()
        scan_call, step_call = (lambda s, p: compiled(s, data, p)), None
    else:
        compiled = train_step_jit.lower((state, empty_totals()), jnp.int32(0), data, plan,
                                        augment).compile()
        scan_call, step_call = None, (lambda c, i, p: compiled(c, i, data, p))
    seconds = time.perf_counter() - start
    return functools.partial(_drive, loop, scan_call, step_call), seconds


# Config fields that change the trajectory: a resumed run must keep them.
_RESUME_INVARIANT = ("variant", "dataset", "batch_size", "learning_rate", "schedule",
                     "warmup_epochs", "seed", "val_size", "augment", "train_limit")


def _check_resumable(saved: dict, config: TrainConfig) -> None:
    saved_config = saved.get("config", {})
    fields = _RESUME_INVARIANT + (("epochs",) if config.schedule == "cosine" else ())
    for field in fields:
        if saved_config.get(field) != getattr(config, field):
            raise checkpoint.CheckpointError(
                f"cannot resume: the run was trained with {field}={saved_config.get(field)!r},"
                f" this command asks for {getattr(config, field)!r}"
            )


def point_best_link(workdir: Path, run_dir: Path) -> None:
    """Make ``workdir/best`` a symlink to this run's best checkpoints (atomically);
    a real directory of that name is left alone."""
    link = workdir / checkpoint.BEST_DIR
    if link.exists() and not link.is_symlink():
        return
    tmp = workdir / f".best-link-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path(os.path.relpath(run_dir / checkpoint.BEST_DIR, workdir)))
    os.replace(tmp, link)


def train_and_evaluate(
    config: TrainConfig, dataset: Dataset, run_dir: Path, resume: bool = False,
    progress: bool = True, log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``config.epochs`` epochs, checkpointing each; returns the last epoch's record."""
    log = log or (lambda line: tqdm.write(line, file=sys.stdout))
    config = config.resolved()
    run_dir = Path(run_dir)
    train_split, val_split = split_validation(dataset.train, config.val_size)
    if config.train_limit:
        train_split = train_split.take(slice(0, config.train_limit))
    if val_split is None:
        log("warning: --val-size 0 selects runs/best on the test set (as the tutorials do);"
            " its test accuracy is then an optimistic estimate")
    steps = steps_per_epoch(len(train_split), config.batch_size)
    mesh = make_mesh(config.devices)
    if mesh is not None and config.batch_size % mesh.size:
        raise ValueError(f"batch size {config.batch_size} does not divide over "
                         f"{mesh.size} devices")
    state = create_train_state(config, steps)
    ckpts = checkpoint.RunCheckpoints(run_dir)
    start_epoch = 0
    if resume and ckpts.latest_epoch() is not None:
        _check_resumable(ckpts.latest_metadata(), config)
        params, opt_state, saved = ckpts.restore_latest(
            checkpoint.abstract_on_this_device(state.params),
            checkpoint.abstract_on_this_device(state.opt_state),
        )
        state = state.replace(params=params, opt_state=opt_state, step=saved["step"])
        start_epoch = saved["epoch"]
        log(f"resuming {run_dir} after epoch {start_epoch}")
    metrics_log = MetricsLog(run_dir, resume_epoch=start_epoch)
    loop = resolve_loop(config.loop)
    state = replicated(mesh, state)
    data = to_device(train_split, mesh)
    test_data = to_device(dataset.test, mesh)
    val_data = to_device(val_split, mesh) if val_split is not None else None
    module = state.module

    def plan_for(epoch: int) -> EpochPlan:
        return plan_epoch(epoch_key(config.seed, epoch), len(train_split), config.batch_size,
                          mesh)

    plan = plan_for(start_epoch)
    run_compiled, compile_seconds = compile_epoch(loop, state, data, plan, config.augment)
    log(f"{config.variant} on {dataset.name}: {len(train_split)} train / "
        f"{len(val_split) if val_split else 0} validation / {len(dataset.test)} test, "
        f"batch {config.batch_size}, Adam {config.learning_rate:g} {config.schedule}"
        f"{', distortions' if config.augment else ''}, loop '{loop}' on "
        f"{jax.default_backend()} x{mesh.size if mesh else 1}, compiled in "
        f"{compile_seconds:.1f}s")
    record: dict = {}
    bar = tqdm(total=config.epochs * steps, initial=start_epoch * steps, unit="step",
               disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, config.epochs):
            plan = plan_for(epoch)
            start = time.perf_counter()
            state, totals = run_compiled(state, plan, bar.update)
            totals = jax.device_get(totals)  # the epoch's only host sync
            seconds = time.perf_counter() - start
            if totals["first_bad_step"] >= 0 or not np.isfinite(totals["loss_sum"]):
                raise TrainingDivergedError(int(totals["first_bad_step"]), epoch + 1)
            record = {
                "epoch": epoch + 1,
                "step": int(state.step),
                "train_loss": float(totals["loss_sum"] / totals["count"]),
                "train_accuracy": float(totals["correct"] / totals["count"]),
                "images_per_second": len(train_split) / seconds,
                "epoch_seconds": seconds,
                "compile_seconds": compile_seconds,
            }
            if val_data is not None:
                val = evaluate(module, state.params, val_data)
                record |= {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}
            test = evaluate(module, state.params, test_data)
            record |= {"test_loss": test["loss"], "test_accuracy": test["accuracy"]}
            selection = record["val_accuracy" if val_data is not None else "test_accuracy"]
            metadata = {
                "preset": config.variant,
                "dataset": dataset.name,
                "class_names": list(dataset.class_names),
                "input_shape": list(module.preset.input_shape),
                "normalisation": {"mean": module.preset.mean, "std": module.preset.std,
                                  "fit": module.preset.fit},
                "epoch": epoch + 1,
                "step": int(state.step),
                "config": dataclasses.asdict(config),
                "loop": loop,
                "metrics": record,
                "selection_split": "validation" if val_data is not None else "test",
                checkpoint.SELECTION_METRIC: selection,
            }
            ckpts.save(epoch + 1, state.params, state.opt_state, metadata)
            ckpts.wait_until_finished()
            metrics_log.append(record)
            point_best_link(run_dir.parent, run_dir)
            val_text = f"val {100 * record['val_accuracy']:.2f}%  " if val_data is not None else ""
            log(f"epoch {epoch + 1:3d}/{config.epochs}  loss {record['train_loss']:.4f}  "
                f"train {100 * record['train_accuracy']:.2f}%  {val_text}"
                f"test {100 * record['test_accuracy']:.2f}%  "
                f"{record['images_per_second']:,.0f} img/s  {seconds:.1f}s")
    finally:
        bar.close()
        ckpts.close()
        metrics_log.plot()
        metrics_log.close()
    return record
