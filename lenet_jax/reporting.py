"""Where a run's numbers go: ``metrics.jsonl`` (one JSON object per epoch), TensorBoard
event files, and a PNG of the curves at the end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lenet_jax import files

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


def read_metrics(run_dir: Path) -> list[dict]:
    """The epochs' records; a line that is not one (cut short by a crash, edited) is
    skipped: the checkpoints, not this log, say where a run stands."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
    return records


class MetricsLog:
    """Appends epoch records; on resume, drops records past the epoch resumed from
    (written after that epoch's checkpoint, before a crash)."""

    def __init__(self, run_dir: Path, resume_epoch: int = 0, write: bool = True):
        self.run_dir, self.write = Path(run_dir), write  # write: False on processes but 0
        self.path = self.run_dir / METRICS_FILE
        self.records = [r for r in read_metrics(self.run_dir) if r["epoch"] <= resume_epoch]
        if self.write:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
            self.writer = _summary_writer(self.run_dir / "tensorboard")

    def append(self, record: dict) -> None:
        self.records.append(record)
        if not self.write:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "epoch" and isinstance(value, int | float):
                self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        """Draw the curves and close the TensorBoard file."""
        if self.write:
            self.plot()
            self.writer.close()

    def plot(self) -> Path | None:
        """Loss and accuracy per epoch, saved as ``curves.png``."""
        if not self.records:
            return None
        from matplotlib.figure import Figure  # not pyplot: files only, and quicker to import

        epochs = [r["epoch"] for r in self.records]
        fig = Figure(figsize=(10, 4))
        loss_ax, acc_ax = fig.subplots(1, 2)
        for key, label in (("train_loss", "train"), ("val_loss", "validation"),
                           ("test_loss", "test")):
            if key in self.records[0]:
                loss_ax.plot(epochs, [r[key] for r in self.records], marker="o", label=label)
        for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation"),
                           ("test_accuracy", "test")):
            if key in self.records[0]:
                acc_ax.plot(epochs, [100 * r[key] for r in self.records], marker="o", label=label)
        loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        for ax in (loss_ax, acc_ax):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = self.run_dir / CURVES_FILE
        with files.replacing(path) as tmp:
            fig.savefig(tmp, dpi=100)
        return path


def _summary_writer(log_dir: Path):
    """A tensorboardX writer. Imported here, so that the training code imports without
    it; and with torch hidden, which tensorboardX imports when present (seconds) only to
    accept torch tensors, where we log floats."""
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # an import of it raises ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide_torch:
            del sys.modules["torch"]
    return SummaryWriter(str(log_dir))
