"""Where a scanned training epoch spends its time: the XLA ops of one step, from a
``jax.profiler`` trace, summed per op and sorted.

    python benchmarks/profile_epoch.py --preset original --steps 100

On CPU the per-op events need ``--xla_cpu_enable_xprof_traceme=true``, which this
script adds to XLA_FLAGS before JAX starts. Ops run inside the compiled while loop;
their names are those of the optimised HLO (``XLA_FLAGS=--xla_dump_to=DIR`` shows it).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import jax  # noqa: E402

from lenet_jax import data, models, training  # noqa: E402
from lenet_jax.config import recipe  # noqa: E402

NOT_OPS = re.compile(r"Thunk|^\$|Pjit|PjRt|^end: ")  # runtime and Python frames


def op_times(trace_dir: Path) -> collections.Counter:
    """Microseconds per op name (numbered copies of one op kind merged) in a trace."""
    trace = next(trace_dir.rglob("*.trace.json.gz"))
    totals: collections.Counter = collections.Counter()
    with gzip.open(trace) as file:
        events = json.load(file)["traceEvents"]
    for event in events:
        if event.get("ph") == "X" and not NOT_OPS.search(event["name"]):
            totals[re.sub(r"\.\d+$", "", event["name"])] += event["dur"]
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="original", choices=list(models.PRESETS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    n = args.steps * args.batch_size
    train, _ = data.split_validation(data.load("mnist").train, 5000)
    config = recipe(args.preset, batch_size=args.batch_size,
                    learning_rate=1e-3, schedule="constant", augment=False)
    state = training.create_train_state(config, args.steps)
    device_data = training.to_device(train.take(slice(0, n)))
    plan = training.plan_epoch(0, 0, n, args.batch_size)
    run, _ = training.compile_epoch("scan", state, device_data, plan)
    state, totals = run(state, plan, lambda _: None)  # warm up
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            state, totals = run(state, plan, lambda _: None)
            jax.block_until_ready(totals)
        times = op_times(Path(trace_dir))
    per_step = {name: us / args.steps / 1000 for name, us in times.items()}
    total = sum(per_step.values())
    print(f"{args.preset}, batch {args.batch_size}, {args.steps} steps: "
          f"{total:.2f} ms of ops per step (profiling adds overhead)")
    for name, ms in sorted(per_step.items(), key=lambda item: -item[1])[:args.top]:
        print(f"{ms:8.3f} ms {100 * ms / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
