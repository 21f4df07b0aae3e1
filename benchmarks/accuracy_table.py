"""Accuracy with error bars: every preset, several seeds, each with its own recipe,
trained through the package's own training functions (issue #17).

    python benchmarks/accuracy_table.py                      # 6 presets x 5 seeds x 10 epochs
    python benchmarks/accuracy_table.py --presets relu_maxpool --seeds 2 --out /tmp/row.md

For each data set and preset it gives the mean ± std (over seeds) of the final test
accuracy, its min and max, the first epoch at which the mean test accuracy reaches 99.0%,
and the accuracy of the seeds' ensemble (averaged logits), beside the figure the
corresponding write-up reports. It writes a Markdown table (``--out``) and a PNG of the
mean curves (``--png``). Seeds are 0..N-1, as ``train.py --seed``; the seeds run one
after another (vmapping seeds measured slower on XLA:CPU). Fashion-MNIST rows need its
data (README, Data); without it they say "not measured here".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import jax  # noqa: E402
import numpy as np  # noqa: E402

from lenet_jax import checkpoint, data, inference, models, training  # noqa: E402
from lenet_jax.config import TrainConfig, recipe  # noqa: E402
from lenet_jax.reporting import read_metrics  # noqa: E402

TARGET = 0.99  # the accuracy whose first epoch is reported

# What each write-up (or the paper) reports for the network a preset reproduces.
REPORTED = {
    ("mnist", "original"): "99.05% / 99.2% with distortions (paper, 20 passes); "
                           "97.28% (a paper-described net, horizontal flips)",
    ("mnist", "tanh_avgpool"): "98.80% (30 epochs)",
    ("mnist", "relu_maxpool"): "98.63% (Adam 1e-3, batch 128, 500 epochs)",
    ("mnist", "relu_avgpool_pad2"): "99.02% (10 epochs)",
    ("fashion_mnist", "sigmoid_maxpool_28"): "86.77% (25 epochs, Adam 1e-3, batch 64, "
                                             "48,000 images)",
}


@dataclasses.dataclass
class Row:
    """One preset on one data set: per seed, the test accuracy after each epoch."""

    dataset: str
    preset: str
    curves: np.ndarray  # (seeds, epochs)
    ensemble: float
    seconds: float

    @property
    def final(self) -> np.ndarray:
        return self.curves[:, -1]

    def first_epoch_at(self, target: float) -> int | None:
        reached = np.flatnonzero(self.curves.mean(axis=0) >= target)
        return int(reached[0]) + 1 if reached.size else None


def train_seed(config: TrainConfig, dataset: data.Dataset,
               workdir: Path) -> tuple[list[float], np.ndarray]:
    """One seed's run: its test accuracy after each epoch and its final test logits."""
    run_dir = workdir / f"{config.dataset}-{config.preset}-{config.seed}"
    training.train_and_evaluate(config, dataset, run_dir, progress=False, log=lambda _: None)
    curve = [record["test_accuracy"] for record in read_metrics(run_dir)]
    params, _ = checkpoint.restore_for_inference(run_dir)  # the last epoch's
    logits = inference.predict_logits(models.LeNet(models.get_preset(config.preset)), params,
                                     jax.device_put(dataset.test.images))
    return curve, np.asarray(logits)


def measure(dataset: data.Dataset, preset: str, seeds: int, epochs: int,
            workdir: Path) -> Row:
    start = time.perf_counter()
    curves, logits = [], []
    for seed in range(seeds):
        config = recipe(preset, dataset=dataset.name, epochs=epochs,
                        seed=seed)
        curve, seed_logits = train_seed(config, dataset, workdir)
        curves.append(curve)
        logits.append(seed_logits)
        print(f"  {dataset.name} {preset} seed {seed}: {100 * curve[-1]:.2f}%", flush=True)
    ensemble = float(np.mean(np.mean(logits, axis=0).argmax(-1) == dataset.test.labels))
    return Row(dataset.name, preset, np.asarray(curves), ensemble,
               time.perf_counter() - start)


def table(rows: list[Row], missing: list[tuple[str, str]], seeds: int) -> str:
    lines = [f"| data | preset | test accuracy, mean ± std over {seeds} seeds | min | max "
             f"| first epoch with mean ≥ {100 * TARGET:.1f}% | ensemble of {seeds} "
             "| machine time | reported |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        final = 100 * row.final
        epoch = row.first_epoch_at(TARGET)
        lines.append(
            f"| {row.dataset} | `{row.preset}` | {final.mean():.2f} ± "
            f"{final.std(ddof=1) if len(final) > 1 else 0:.2f}% | {final.min():.2f}% | "
            f"{final.max():.2f}% | {epoch or 'not reached'} | {100 * row.ensemble:.2f}% | "
            f"{row.seconds:.0f} s | {REPORTED.get((row.dataset, row.preset), '-')} |")
    for name, preset in missing:
        lines.append(f"| {name} | `{preset}` | not measured here ({name} is not on this "
                     f"machine) | | | | | | {REPORTED.get((name, preset), '-')} |")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    from matplotlib.figure import Figure

    datasets = sorted({row.dataset for row in rows})
    fig = Figure(figsize=(6 * len(datasets), 4.5))
    for ax, name in zip(np.atleast_1d(fig.subplots(1, len(datasets))), datasets, strict=True):
        for row in (r for r in rows if r.dataset == name):
            epochs = np.arange(1, row.curves.shape[1] + 1)
            mean, std = 100 * row.curves.mean(0), 100 * row.curves.std(0)
            ax.plot(epochs, mean, label=row.preset)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
        ax.set(title=f"{name}: test accuracy, mean ± std over seeds", xlabel="epoch",
               ylabel="%")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def header(args: argparse.Namespace, seconds: float) -> str:
    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in (jax, np))
    return (f"# Accuracy over seeds\n\nWritten by `python benchmarks/accuracy_table.py "
            f"{' '.join(sys.argv[1:])}`; each preset with its own recipe (`TrainConfig` "
            f"defaults: batch 64, 5,000 validation images held out), {args.epochs} epochs, "
            f"seeds 0-{args.seeds - 1}. Machine: {cpu_name()}, {os.cpu_count()} cores, "
            f"{jax.device_count()} {jax.default_backend()} device(s), Python "
            f"{platform.python_version()}, {versions}. Wall time {seconds / 60:.1f} min.\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(models.PRESETS),
                        choices=list(models.PRESETS))
    parser.add_argument("--datasets", nargs="+", default=list(data.DATASETS),
                        choices=list(data.DATASETS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/ACCURACY.md"))
    parser.add_argument("--png", type=Path, default=None,
                        help="the curves (default: --out with .png)")
    args = parser.parse_args()
    start = time.perf_counter()
    rows, missing = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.datasets:
            try:
                dataset = data.load(name)
            except data.DataError as err:
                print(f"{name}: not measured here ({err})", file=sys.stderr)
                missing += [(name, preset) for preset in args.presets]
                continue
            rows += [measure(dataset, preset, args.seeds, args.epochs, Path(workdir))
                     for preset in args.presets]
    seconds = time.perf_counter() - start
    args.out.write_text(header(args, seconds) + "\n" + table(rows, missing, args.seeds) + "\n")
    if rows:
        plot(rows, args.png or args.out.with_suffix(".png"))
    print(json.dumps({"out": str(args.out), "minutes": round(seconds / 60, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
