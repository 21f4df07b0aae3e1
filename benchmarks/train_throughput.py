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

    python benchmarks/train_throughput.py --preset original --steps 500 --repeats 3

Images/s are medians over the repeats, compile (or first-step) time is reported apart,
peak RSS is the process's high-water mark after each contender (they run in order).
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax_reference import FlaxExampleLeNet  # noqa: E402

from lenet_jax import data, models, training  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def bench_ours(preset: str, train: data.Split, test: data.Split, steps: int, batch: int,
               repeats: int) -> Result:
    n = steps * batch
    config = training.TrainConfig(variant=preset, batch_size=batch, learning_rate=1e-3,
                                  schedule="constant")
    state = training.create_train_state(config, steps)
    device_data = training.to_device(train.take(slice(0, n)))
    plan = training.plan_epoch(training.epoch_key(0, 0), n, batch)
    run, compile_seconds = training.compile_epoch("scan", state, device_data, plan, False)
    rates = []
    for repeat in range(repeats):
        plan = training.plan_epoch(training.epoch_key(0, repeat), n, batch)
        start = time.perf_counter()
        state, totals = run(state, plan, lambda _: None)
        jax.block_until_ready(totals)
        rates.append(n / (time.perf_counter() - start))
    return Result("ours (device data, scanned epoch)", rates, compile_seconds,
                  *_jax_eval(state.module, state.params, test), peak_rss_mib())


def _jax_eval(module, params, test: data.Split) -> tuple[float, float]:
    images = jax.device_put(test.images)
    jax.block_until_ready(training.predict_logits(module, params, images))  # compile
    times = []
    for _ in range(3):
        start = time.perf_counter()
        logits = jax.block_until_ready(training.predict_logits(module, params, images))
        times.append(time.perf_counter() - start)
    accuracy = float(np.mean(np.asarray(logits).argmax(-1) == test.labels))
    return statistics.median(times), accuracy


def bench_flax_example(preset: str, train: data.Split, test: data.Split, steps: int,
                       batch: int, repeats: int, textbook_model: bool = False) -> Result:
    """Flax's examples/mnist/train.py loop, with this project's model for the preset or,
    with ``textbook_model``, the preset written as that example writes its CNN."""
    module, _ = models.create_model(preset)
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

    def train_epoch(state, rng):
        perms = np.asarray(jax.random.permutation(rng, steps * batch)).reshape(steps, batch)
        for i, perm in enumerate(perms):
            _, grads = apply_model(state, host_images[perm], host_labels[perm],
                                   jax.random.fold_in(rng, i))
            state = update_model(state, grads)
        return state

    start = time.perf_counter()  # first step: tracing and compiling both functions
    _, grads = apply_model(state, host_images[:batch], host_labels[:batch], jax.random.key(0))
    jax.block_until_ready(update_model(state, grads))
    compile_seconds = time.perf_counter() - start
    rates = []
    for repeat in range(repeats):
        start = time.perf_counter()
        state = jax.block_until_ready(train_epoch(state, jax.random.key(repeat)))
        rates.append(steps * batch / (time.perf_counter() - start))
    return Result(name, rates, compile_seconds,
                  *_jax_eval(module, state.params, test), peak_rss_mib())


def bench_torch(preset: str, train: data.Split, test: data.Split, steps: int, batch: int,
                repeats: int, threads: int) -> Result | None:
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
    images = to_nchw(np.asarray(models.preprocess(train.images[: steps * batch], spec)))
    labels = torch.from_numpy(train.labels[: steps * batch].astype(np.int64))
    start = time.perf_counter()  # warm-up: one step (allocator, kernels)
    train_steps(model, optimizer, images, labels, torch.arange(batch), batch)
    warmup = time.perf_counter() - start
    rates = []
    for repeat in range(repeats):
        order = torch.randperm(steps * batch, generator=torch.Generator().manual_seed(repeat))
        start = time.perf_counter()
        train_steps(model, optimizer, images, labels, order, batch)
        rates.append(steps * batch / (time.perf_counter() - start))
    test_images = to_nchw(np.asarray(models.preprocess(test.images, spec)))
    test_labels = torch.from_numpy(test.labels.astype(np.int64))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        acc = accuracy(model, test_images, test_labels)
        times.append(time.perf_counter() - start)
    return Result(f"PyTorch {torch.__version__} eager", rates, warmup, statistics.median(times),
                  acc, peak_rss_mib())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="original", choices=list(models.PRESETS))
    parser.add_argument("--steps", type=int, default=500, help="steps per timed repeat")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["ours", "flax-loop", "flax-example", "torch"])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.steps * args.batch_size > 55_000:
        parser.error("--steps x --batch-size must fit in 55,000 training images")
    mnist = data.load("mnist")
    train, _ = data.split_validation(mnist.train, 5000)
    common = (args.preset, train, mnist.test, args.steps, args.batch_size, args.repeats)
    threads = args.threads or os.cpu_count() or 1
    results = []
    if "ours" not in args.skip:
        results.append(bench_ours(*common))
    if "flax-loop" not in args.skip:
        results.append(bench_flax_example(*common))
    if "flax-example" not in args.skip:
        results.append(bench_flax_example(*common, textbook_model=True))
    if "torch" not in args.skip:
        torch_result = bench_torch(*common, threads)
        if torch_result:
            results.append(torch_result)

    device = jax.devices()[0]
    print(f"\n{args.preset}, batch {args.batch_size}, {args.steps} steps x {args.repeats} "
          f"repeats, {device.platform} ({device.device_kind}), jax {jax.__version__}, "
          f"{os.cpu_count()} CPU cores, {platform.machine()}")
    header = (f"{'loop':48s} {'img/s (median)':>15s} {'runs':>24s} {'compile s':>9s} "
              f"{'eval 10k s':>10s} {'test acc':>8s} {'peak RSS MiB':>12s}")
    print(header)
    for r in results:
        runs = "/".join(f"{x:,.0f}" for x in r.images_per_second)
        print(f"{r.name:48s} {r.median:15,.0f} {runs:>24s} {r.compile_seconds:9.2f} "
              f"{r.eval_seconds:10.3f} {100 * r.test_accuracy:7.2f}% {r.peak_rss_mib:12,.0f}")
    if results and results[0].name.startswith("ours"):
        for other in results[1:]:
            print(f"ours / {other.name.split(' (')[0]}: {results[0].median / other.median:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [dataclasses.asdict(r) | {"median": r.median} for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
