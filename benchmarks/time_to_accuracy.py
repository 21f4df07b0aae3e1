"""Time to an accuracy: ``python train.py FLAGS --seed S`` as a whole process, for each
seed, timed from its start to its exit (the last checkpoint written), with the test
accuracy of its last epoch (issue #17, item 2).

    python benchmarks/time_to_accuracy.py --seeds 5 -- --preset relu_avgpool_pad2 --epochs 3

Prints one line per seed and a summary: how many seeds reached ``--target`` and the
median wall time; ``--json`` writes them. Runs go one after another, in fresh work
directories, sharing the user's compilation cache as repeated runs do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_seed(flags: list[str], seed: int, workdir: Path) -> tuple[float, float]:
    """(wall seconds, final test accuracy) of one ``train.py`` process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *flags, "--seed", str(seed),
                           "--workdir", str(workdir), "--name", "run", "--no-progress"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"train.py failed for seed {seed}: {done.stderr.strip()[-500:]}")
    last = (workdir / "run" / "metrics.jsonl").read_text().splitlines()[-1]
    return seconds, json.loads(last)["test_accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="train.py's flags, after --")
    args = parser.parse_args()
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            seconds, accuracy = run_seed(flags, seed, Path(tmp) / str(seed))
            runs.append({"seed": seed, "seconds": seconds, "test_accuracy": accuracy})
            print(f"seed {seed}: {100 * accuracy:.2f}% in {seconds:.1f} s", flush=True)
    passed = sum(r["test_accuracy"] >= args.target for r in runs)
    median = statistics.median(r["seconds"] for r in runs)
    accuracies = ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in runs)
    print(f"{' '.join(flags)}: {passed}/{len(runs)} seeds reached {100 * args.target:.1f}%; "
          f"median wall {median:.1f} s, accuracies {accuracies}")
    if args.json:
        args.json.write_text(json.dumps({"flags": flags, "runs": runs, "passed": passed,
                                         "median_seconds": median}, indent=2))
    return 0 if passed == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
