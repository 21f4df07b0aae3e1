"""Does the hand-written convolution gradient pay? The same scanned epoch trained with
``LeNet(custom_grad=True)`` and with autodiff, interleaved rounds in one process:

    python benchmarks/custom_grad_ab.py --preset original --steps 300 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from lenet_jax import models, training  # noqa: E402
from lenet_jax.data import Split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="original")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.steps * args.batch_size
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8),
                  rng.integers(0, 10, n).astype(np.int32))
    config = training.TrainConfig(preset=args.preset, batch_size=args.batch_size,
                                  augment=False).resolved()
    data = training.to_device(split)
    plan = training.plan_epoch(0, 0, n, args.batch_size)
    runs = {}
    for custom in (True, False):
        module = models.LeNet(models.get_preset(args.preset), custom_grad=custom)
        state = training.create_train_state(config, args.steps).replace(module=module,
                                                                         apply_fn=module.apply)
        run, seconds = training.compile_epoch("scan", state, data, plan)
        runs[custom] = (run, state)
        print(f"custom_grad={custom}: compiled in {seconds:.1f}s", flush=True)
    rates = {True: [], False: []}
    for _ in range(args.rounds):
        for custom, (run, state) in runs.items():
            fresh = jax.tree_util.tree_map(lambda x: x.copy() if hasattr(x, "copy") else x, state)
            start = time.perf_counter()
            out, totals = run(fresh, plan, None)
            jax.block_until_ready(totals)
            rates[custom].append(n / (time.perf_counter() - start))
    for custom in (True, False):
        print(f"custom_grad={custom}: median {statistics.median(rates[custom]):,.0f} img/s "
              f"(rounds {', '.join(f'{r:,.0f}' for r in rates[custom])})")
    ratios = [a / b for a, b in zip(rates[True], rates[False], strict=True)]
    print(f"hand-written / autodiff: median {statistics.median(ratios):.3f}x "
          f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
