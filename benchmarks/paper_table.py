"""The 1998 paper's training reproduced (issue #27): LeNet-5 trained as the paper did
(``--recipe paper``: MAP loss, SDLM, Appendix A's initialisation, one pattern a step, all
60,000 images, 20 passes), with and without distortions, beside the same network with
the project's Adam recipe, several seeds each.

    python benchmarks/paper_table.py                          # 3 rows x 5 seeds x 20 passes
    python benchmarks/paper_table.py --rows paper --seeds 2 --out /tmp/row.md
    python benchmarks/paper_table.py --report     # the table and plot of the runs done

Each run's curve (training error during each pass, test error after it) is kept in
``--runs`` (JSON, one entry per row and seed), and a run already there is not trained
again: an interrupted sweep continues where it stopped. From the runs it writes a
Markdown table (``--out``: the test error after the last pass, mean ± std and min-max,
beside the paper's figure) and a Fig. 5-style plot (``--png``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.accuracy_table import cpu_name  # noqa: E402
from lenet_jax import data, training  # noqa: E402
from lenet_jax.config import TrainConfig, recipe  # noqa: E402
from lenet_jax.reporting import read_metrics  # noqa: E402

# Each row's config for a seed, and what the paper reports for it (Sec. III-C, Fig. 5).
ROWS: dict[str, tuple[str, dict, str]] = {
    "paper": ("paper", {}, "0.95% (training 0.35%)"),
    "paper, distortions": ("paper", {"augment": True}, "0.80%"),
    "Adam (the project's recipe)": (None, {}, "-"),
}
ROW_KEYS = {"paper": "paper", "distortions": "paper, distortions", "adam":
            "Adam (the project's recipe)"}
_KEY_OF = {row: key for key, row in ROW_KEYS.items()}
PAPER_END = {"paper": (0.35, 0.95), "paper, distortions": (None, 0.80)}  # train, test %


def config_for(row: str, seed: int, passes: int) -> TrainConfig:
    name, changes, _ = ROWS[row]
    return recipe("original", name, epochs=passes, seed=seed, **changes)


def train(config: TrainConfig, dataset: data.Dataset, run_dir: Path) -> dict:
    """One run: per pass its training error (during the pass) and test error, in %, the
    share of test digits its "not a digit" rule refuses at the end, and the machine time
    of its passes."""
    training.train_and_evaluate(config, dataset, run_dir, progress=False, log=lambda _: None)
    records = read_metrics(run_dir)
    return {"train_error": [100 * (1 - r["train_accuracy"]) for r in records],
            "test_error": [100 * (1 - r["test_accuracy"]) for r in records],
            "test_rejected": 100 * records[-1].get("test_rejected", np.nan),
            "seconds": sum(r["epoch_seconds"] for r in records)}


def table(runs: dict, seeds: int) -> str:
    lines = ["| training | test error after the last pass, mean ± std | min-max | seeds "
             "| machine time per run | paper |", "|---|---|---|---|---|---|"]
    for row, (_, _, reported) in ROWS.items():
        done = [runs[row][str(s)] for s in range(seeds) if str(s) in runs.get(row, {})]
        if not done:
            continue
        final = np.array([run["test_error"][-1] for run in done])
        spread = final.std(ddof=1) if len(final) > 1 else 0.0
        minutes = np.mean([run["seconds"] for run in done]) / 60
        lines.append(f"| {row} | {final.mean():.2f} ± {spread:.2f}% | {final.min():.2f}-"
                     f"{final.max():.2f}% | {len(done)} | {minutes:.1f} min | {reported} |")
    return "\n".join(lines)


def plot(runs: dict, seeds: int, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for (row, _), colour in zip(ROWS.items(), ("C0", "C1", "C2"), strict=True):
        done = [runs[row][str(s)] for s in range(seeds) if str(s) in runs.get(row, {})]
        if not done:
            continue
        for kind, style, words in (("train_error", "--", "training"), ("test_error", "-",
                                                                       "test")):
            curves = np.array([run[kind] for run in done])
            passes = np.arange(1, curves.shape[1] + 1)
            ax.plot(passes, curves.mean(0), style, color=colour,
                    label=f"{row}: {words} ({len(done)} seeds)")
        for value, marker in zip(PAPER_END.get(row, (None, None)), ("x", "o"), strict=True):
            if value is not None:
                ax.plot([passes[-1]], [value], marker, color=colour, markersize=9)
    ax.plot([], [], "x", color="grey", label="the paper after 20 passes: training")
    ax.plot([], [], "o", color="grey", label="the paper after 20 passes: test")
    ax.set(xlabel="passes over the training set", ylabel="error (log scale)", yscale="log",
           title="LeNet-5 on MNIST: error against passes, mean over seeds")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.yaxis.set_minor_formatter(FuncFormatter(  # 0.2%, 0.5%, 2%, 5%: not every minor tick
        lambda v, _: f"{v:g}%" if round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROW_KEYS), choices=list(ROW_KEYS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/paper_runs.json"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/PAPER.md"))
    parser.add_argument("--png", type=Path, default=None, help="default: --out with .png")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: the table and plot of the runs already done")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each run's checkpoints in KEEP/<row>/<seed>")
    args = parser.parse_args()
    rows = [ROW_KEYS[r] for r in args.rows]
    runs = json.loads(args.runs.read_text()) if args.runs.exists() else {}
    dataset = None if args.report else data.load("mnist")
    start = time.perf_counter()
    for seed in range(args.seeds):  # seed by seed, so that a cut sweep has every row
        for row in rows:
            if args.report or str(seed) in runs.get(row, {}):
                continue
            with tempfile.TemporaryDirectory() as workdir:
                where = (args.keep or Path(workdir)) / _KEY_OF[row] / str(seed)
                run = train(config_for(row, seed, args.passes), dataset, where)
            runs.setdefault(row, {})[str(seed)] = run
            args.runs.write_text(json.dumps(runs, indent=1) + "\n")
            print(f"{row}, seed {seed}: {run['test_error'][-1]:.2f}% test error, "
                  f"{run['seconds'] / 60:.1f} min", flush=True)
    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in (jax, np))
    header = (f"# The paper's training, reproduced\n\nWritten by `python benchmarks/"
              f"paper_table.py {' '.join(sys.argv[1:])}` from the runs in `{args.runs}`; "
              f"{args.passes} passes, seeds 0-{args.seeds - 1} asked (the seeds column: "
              f"those run). Machine time is the passes' own, on a host shared with other "
              f"work. Machine: {cpu_name()}, "
              f"{os.cpu_count()} cores, {jax.device_count()} {jax.default_backend()} "
              f"device(s), Python {platform.python_version()}, {versions}.\n")
    args.out.write_text(header + "\n" + table(runs, args.seeds) + "\n")
    plot(runs, args.seeds, args.png or args.out.with_suffix(".png"))
    print(json.dumps({"out": str(args.out), "minutes": round((time.perf_counter() - start)
                                                               / 60, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
