"""Replicated data set or each process feeding its rows (issue #15, item 2): the cost of
building every global batch from host rows with ``jax.make_array_from_process_local_data``
against gathering it on the device from the replicated training set.

    python benchmarks/feeding.py --devices 8 --steps 200 --rounds 3

One process over ``--devices`` forced host devices; with one process its "own rows" are
all rows, so the host-to-device copy here is the whole batch, as each host's share is
on a cluster. Contenders run interleaved, ``--rounds`` times each, in this process.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

_DEVICES = next((a.split("=")[1] for a in sys.argv if a.startswith("--devices=")), None)
if _DEVICES is None and "--devices" in sys.argv:
    _DEVICES = sys.argv[sys.argv.index("--devices") + 1]
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={_DEVICES or 8}")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from lenet_jax import data, models, training  # noqa: E402
from lenet_jax.config import recipe  # noqa: E402


@functools.partial(jax.jit, donate_argnums=0, compiler_options=training.compiler_options())
def fed_step(state: training.TrainState, images: jax.Array, labels: jax.Array,
             key: jax.Array) -> training.TrainState:
    """One step on a batch that arrives from the host, already laid out over devices."""
    grads, _ = jax.grad(training._batch_loss, has_aux=True)(
        state.params, state, images, labels, jnp.ones(labels.shape, bool), key, True, False)
    return state.apply_gradients(grads=grads)


def replicated_epochs(state, run, plan):
    """The project's way: every step gathers its batch from the replicated set on device."""
    state, totals = run(state, plan, None)
    jax.block_until_ready(totals)
    return state


def fed_epochs(state, images, labels, order, sharding, key):
    """Each step: take this process's rows on the host, then one global array of them."""
    for step, rows in enumerate(order):
        batch = [jax.make_array_from_process_local_data(sharding, x[rows])
                 for x in (images, labels)]
        # Waiting each step: with many steps in flight, XLA:CPU's in-process all-gather
        # over forced devices deadlocks (a participant never arrives; 40 s, then abort).
        state = jax.block_until_ready(fed_step(state, *batch, jax.random.fold_in(key, step)))
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--preset", default="original", choices=list(models.PRESETS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    train, _ = data.split_validation(data.load("mnist").train, 5000)
    n = args.steps * args.batch_size
    mesh = training.make_mesh(args.devices, args.batch_size)
    config = recipe(args.preset, batch_size=args.batch_size,
                    learning_rate=1e-3, schedule="constant", augment=False)
    fresh = lambda: training.replicated(mesh, training.create_train_state(config, args.steps))  # noqa: E731
    device_data = training.to_device(train.take(slice(0, n)), mesh)
    plan = training.plan_epoch(0, 0, n, args.batch_size, mesh)
    run, _ = training.compile_epoch("scan", fresh(), device_data, plan)
    images, labels = train.images[:n], train.labels[:n].astype(np.int32)
    order = np.asarray(plan.indices)
    sharding = NamedSharding(mesh, P("data")) if mesh else jax.devices()[0]
    contenders = {
        "replicated (gather on device, one scan)": lambda s: replicated_epochs(s, run, plan),
        "fed (host rows -> make_array_from_process_local_data, per step)":
            lambda s: fed_epochs(s, images, labels, order, sharding, plan.key),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for call in contenders.values():
        call(fresh())  # compile and warm up
    for _ in range(args.rounds):
        for name, call in contenders.items():
            state = fresh()
            start = time.perf_counter()
            call(state)
            times[name].append(time.perf_counter() - start)
    print(f"{args.preset}, {args.devices} devices, batch {args.batch_size}, {args.steps} steps, "
          f"median of {args.rounds} interleaved rounds:")
    for name, seconds in times.items():
        best = sorted(seconds)[len(seconds) // 2]
        print(f"  {name:66s} {best:6.2f} s  {n / best:8.0f} img/s")
    print(f"  replicated training set per device: {train.images[:n].nbytes / 2**20:.1f} MiB "
          f"(all 55,000 images: {train.images.nbytes / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
