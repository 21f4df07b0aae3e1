"""Training throughput, side by side, in one process on the same data, preset, batch
size and number of steps:

  ours          the project's loop: data on device as uint8, an epoch as one compiled
                lax.scan, this project's model
  flax-loop     the Flax examples/mnist loop: a jit'd step called from Python per batch,
                the batch sliced from host numpy (float32, normalised on the host) each
                step; this project's model, so it measures the loop alone
  flax-example  the same loop with the preset written as that example writes its CNN
                (nn.Conv, NHWC; benchmarks/flax_reference.py)
  torch         PyTorch eager, the same preset row built with torch.nn
                (benchmarks/torch_reference.py)
  torch-compile the same model and loop with ``torch.compile(model)`` (inductor), what
                a PyTorch user tries next; its compilation (the first steps) is
                reported as its compile time

    python benchmarks/train_throughput.py --preset original --steps 500 --repeats 5

On a machine without TensorFlow (TFDS needs it), give it the arrays, written where TFDS
works with ``--save-arrays mnist.npz``: ``--arrays mnist.npz`` (benchmarks/gpu_check.sh).

Every contender is set up and compiled first; then the timed passes run in rounds, one
pass of each contender per round, so that a machine whose speed drifts (a shared host)
slows them alike. Images/s are medians over the rounds, and each ratio is also given per
round. Compile (or first-step) time is reported apart; peak RSS is the process's
high-water mark after each contender's setup (they are set up in order).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax_reference import FlaxExampleLeNet  # noqa: E402

from lenet_jax import data, inference, models, training  # noqa: E402
from lenet_jax.config import recipe  # noqa: E402

CONTENDERS = ("ours", "flax-loop", "flax-example", "torch", "torch-compile")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclasses.dataclass
class Contender:
    """A set-up training loop: ``run_pass(r)`` trains on the benchmark's images once
    (pass ``r`` fixes the order) and returns when the work is done; ``evaluate()``
    gives (seconds for the test set, test accuracy) with the parameters reached."""

    name: str
    compile_seconds: float
    run_pass: Callable[[int], None]
    evaluate: Callable[[], tuple[float, float]]
    peak_rss_mib: float = 0.0


@dataclasses.dataclass
class Result:
    name: str
    images_per_second: list[float]
    compile_seconds: float
    eval_seconds: float
    test_accuracy: float
    peak_rss_mib: float

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_second)


def setup_ours(preset: str, train: data.Split, test: data.Split, steps: int,
               batch: int) -> Contender:
    n = steps * batch
    config = recipe(preset, batch_size=batch, learning_rate=1e-3,
                    schedule="constant")
    state = training.create_train_state(config, steps)
    device_data = training.to_device(train.take(slice(0, n)))
    plan = training.plan_epoch(0, 0, n, batch)
    run, compile_seconds = training.compile_epoch("scan", state, device_data, plan)

    def run_pass(repeat: int) -> None:
        nonlocal state
        state, totals = run(state, training.plan_epoch(0, repeat, n, batch),
                            None)
        jax.block_until_ready(totals)

    return Contender("ours (device data, scanned epoch)", compile_seconds, run_pass,
                     lambda: _jax_eval(state.module, state.params, test))


def _median_seconds(call: Callable[[], Any], times: int = 3) -> tuple[float, Any]:
    """Median wall time of ``times`` calls, and the last call's result."""
    seconds = []
    for _ in range(times):
        start = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def _jax_eval(module, params, test: data.Split) -> tuple[float, float]:
    images = jax.device_put(test.images)
    jax.block_until_ready(inference.predict_logits(module, params, images))  # compile
    seconds, logits = _median_seconds(
        lambda: jax.block_until_ready(inference.predict_logits(module, params, images)))
    return seconds, float(np.mean(np.asarray(logits).argmax(-1) == test.labels))


def setup_flax_example(preset: str, train: data.Split, test: data.Split, steps: int,
                       batch: int, textbook_model: bool = False) -> Contender:
    """Flax's examples/mnist/train.py loop, with this project's model for the preset or,
    with ``textbook_model``, the preset written as that example writes its CNN."""
    # The module our training uses, so that the loop alone differs.
    module = models.LeNet(models.get_preset(preset))
    name = "Flax example loop, this project's model"
    if textbook_model:
        module = FlaxExampleLeNet(module.preset)
        name = "Flax example loop and model (nn.Conv, NHWC)"
    host_images = np.asarray(models.preprocess(train.images[: steps * batch], module.preset))
    host_labels = train.labels[: steps * batch]
    dummy = jnp.zeros((1, *module.preset.input_shape), jnp.float32)
    state = training.TrainState.create(
        apply_fn=module.apply, params=module.init(jax.random.key(0), dummy)["params"],
        tx=optax.adam(1e-3), module=module,
    )

    @jax.jit
    def apply_model(state, images, labels, key):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, images, train=True,
                                    rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        return jax.value_and_grad(loss_fn)(state.params)

    @jax.jit
    def update_model(state, grads):
        return state.apply_gradients(grads=grads)

    def run_pass(repeat: int) -> None:  # the example's train_epoch
        nonlocal state
        rng = jax.random.key(repeat)
        perms = np.asarray(jax.random.permutation(rng, steps * batch)).reshape(steps, batch)
        for i, perm in enumerate(perms):
            _, grads = apply_model(state, host_images[perm], host_labels[perm],
                                   jax.random.fold_in(rng, i))
            state = update_model(state, grads)
        jax.block_until_ready(state)

    start = time.perf_counter()  # first step: tracing and compiling both functions
    _, grads = apply_model(state, host_images[:batch], host_labels[:batch], jax.random.key(0))
    jax.block_until_ready(update_model(state, grads))
    return Contender(name, time.perf_counter() - start, run_pass,
                     lambda: _jax_eval(module, state.params, test))


def setup_torch(preset: str, train: data.Split, test: data.Split, steps: int, batch: int,
                threads: int, compiled: bool = False) -> Contender | None:
    try:
        import torch
    except ImportError:
        print("torch is not installed: skipping the PyTorch reference "
              "(pip install -e '.[bench]' or pip install torch==2.13.0)", file=sys.stderr)
        return None
    from torch_reference import TorchLeNet, accuracy, to_nchw, train_steps

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    spec = models.get_preset(preset)
    model = TorchLeNet(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if compiled:
        # The model alone: also compiling optimizer.step, or mode="max-autotune", measured
        # no faster here (benchmarks/RESULTS.md).
        model = torch.compile(model)
    images = to_nchw(np.asarray(models.preprocess(train.images[: steps * batch], spec)))
    labels = torch.from_numpy(train.labels[: steps * batch].astype(np.int64))
    start = time.perf_counter()  # warm-up: two steps (allocator, kernels; compilation)
    train_steps(model, optimizer, images, labels, torch.arange(2 * batch), batch)
    warmup = time.perf_counter() - start

    def run_pass(repeat: int) -> None:
        order = torch.randperm(steps * batch, generator=torch.Generator().manual_seed(repeat))
        train_steps(model, optimizer, images, labels, order, batch)

    def evaluate() -> tuple[float, float]:
        test_images = to_nchw(np.asarray(models.preprocess(test.images, spec)))
        test_labels = torch.from_numpy(test.labels.astype(np.int64))
        return _median_seconds(lambda: accuracy(model, test_images, test_labels))

    kind = "torch.compile (inductor)" if compiled else "eager"
    return Contender(f"PyTorch {torch.__version__} {kind}", warmup, run_pass, evaluate)


def run_rounds(contenders: list[Contender], images_per_pass: int,
               rounds: int) -> list[list[float]]:
    """Images/s of each contender per round; a round times one pass of each, in turn."""
    rates: list[list[float]] = [[] for _ in contenders]
    for repeat in range(rounds):
        for contender, contender_rates in zip(contenders, rates, strict=True):
            start = time.perf_counter()
            contender.run_pass(repeat)
            contender_rates.append(images_per_pass / (time.perf_counter() - start))
    return rates


def report(results: list[Result], header_line: str) -> str:
    lines = [header_line, (
        f"{'loop':48s} {'img/s (median)':>15s} {'rounds':>36s} {'compile s':>9s} "
        f"{'eval 10k s':>10s} {'test acc':>8s} {'peak RSS MiB':>12s}")]
    for r in results:
        runs = "/".join(f"{x:,.0f}" for x in r.images_per_second)
        lines.append(
            f"{r.name:48s} {r.median:15,.0f} {runs:>36s} {r.compile_seconds:9.2f} "
            f"{r.eval_seconds:10.3f} {100 * r.test_accuracy:7.2f}% {r.peak_rss_mib:12,.0f}")
    if results and results[0].name.startswith("ours"):
        ours = results[0]
        for other in results[1:]:
            per_round = sorted(a / b for a, b in zip(ours.images_per_second,
                                                     other.images_per_second, strict=True))
            lines.append(f"ours / {other.name.split(' (')[0]}: {ours.median / other.median:.2f}x"
                         f" (per round {per_round[0]:.2f}-{per_round[-1]:.2f}x)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="original", choices=list(models.PRESETS))
    parser.add_argument("--steps", type=int, default=500, help="steps per timed pass")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of timed passes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--skip", nargs="*", default=[], choices=CONTENDERS)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--arrays", default=None, metavar="NPZ",
                        help="read MNIST from this file (lenet_jax.data.save_arrays; checked "
                             "against the same digests) instead of TFDS: for a machine "
                             "without TensorFlow")
    parser.add_argument("--save-arrays", default=None, metavar="NPZ",
                        help="write the MNIST arrays TFDS gives to this file and exit")
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1 or args.repeats < 1:
        parser.error("--steps, --batch-size and --repeats must be positive")
    if args.steps * args.batch_size > 55_000:
        parser.error("--steps x --batch-size must fit in 55,000 training images")
    try:
        mnist = data.load_arrays(args.arrays) if args.arrays else data.load("mnist")
    except data.DataError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if args.save_arrays:
        data.save_arrays(mnist, args.save_arrays)
        print(f"wrote {args.save_arrays}")
        return 0
    train, _ = data.split_validation(mnist.train, 5000)
    common = (args.preset, train, mnist.test, args.steps, args.batch_size)
    setups = {
        "ours": lambda: setup_ours(*common),
        "flax-loop": lambda: setup_flax_example(*common),
        "flax-example": lambda: setup_flax_example(*common, textbook_model=True),
        "torch": lambda: setup_torch(*common, args.threads or os.cpu_count() or 1),
        "torch-compile": lambda: setup_torch(*common, args.threads or os.cpu_count() or 1,
                                             compiled=True),
    }
    contenders = []
    for name in CONTENDERS:
        if name not in args.skip and (contender := setups[name]()) is not None:
            contender.peak_rss_mib = peak_rss_mib()
            contenders.append(contender)
    rates = run_rounds(contenders, args.steps * args.batch_size, args.repeats)
    results = [Result(c.name, r, c.compile_seconds, *c.evaluate(), c.peak_rss_mib)
               for c, r in zip(contenders, rates, strict=True)]

    device = jax.devices()[0]
    print("\n" + report(results, (
        f"{args.preset}, batch {args.batch_size}, {args.steps} steps x {args.repeats} rounds, "
        f"{device.platform} ({device.device_kind}), jax {jax.__version__}, "
        f"{os.cpu_count()} CPU cores, {platform.machine()}")))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [dataclasses.asdict(r) | {"median": r.median} for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
