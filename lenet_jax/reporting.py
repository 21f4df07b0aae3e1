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


# An epoch record's curves as TensorBoard shows them: grouped, so that train, validation
# and test share a chart (a record's other numbers, its step and compile time, are not
# curves).
TENSORBOARD_TAGS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "test_loss": "loss/test",
    "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/val",
    "test_accuracy": "accuracy/test", "test_rejected": "not_a_digit/test_rejected",
    "learning_rate": "optimizer/learning_rate",
    "images_per_second": "speed/images_per_second", "epoch_seconds": "speed/epoch_seconds",
}


class MetricsLog:
    """Appends epoch records; on resume, drops records past the epoch resumed from
    (written after that epoch's checkpoint, before a crash). ``config`` goes to
    TensorBoard as text; ``selection`` names the accuracy that chooses runs/best."""

    def __init__(self, run_dir: Path, resume_epoch: int = 0, write: bool = True,
                 config: dict | None = None, selection: str = "val_accuracy"):
        self.run_dir, self.write = Path(run_dir), write  # write: False on processes but 0
        self.selection = selection
        self.path = self.run_dir / METRICS_FILE
        self.records = [r for r in read_metrics(self.run_dir) if r["epoch"] <= resume_epoch]
        if self.write:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
            self.writer = _summary_writer(self.run_dir / "tensorboard")
            if config is not None:
                rows = "\n".join(f"| {k} | {v} |" for k, v in config.items())
                self.writer.add_text("config", f"| setting | value |\n|---|---|\n{rows}",
                                     resume_epoch)

    def append(self, record: dict) -> None:
        self.records.append(record)
        if not self.write:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, tag in TENSORBOARD_TAGS.items():
            if isinstance(record.get(key), int | float):
                self.writer.add_scalar(tag, record[key], record["epoch"])
        self.writer.flush()

    def selected_epoch(self) -> int | None:
        """The epoch runs/best names: the highest selection accuracy, the latest of equals
        (as the checkpoints choose it)."""
        scored = [(r[self.selection], r["epoch"]) for r in self.records if self.selection in r]
        return max(scored)[1] if scored else None

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
        selected = self.selected_epoch()
        for ax in (loss_ax, acc_ax):
            if selected is not None:
                ax.axvline(selected, color="gray", linestyle="--",
                           label=f"runs/best: epoch {selected}")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{self.run_dir.name}: {len(self.records)} epochs, best chosen on "
                     f"{'validation' if self.selection == 'val_accuracy' else 'test'} accuracy")
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
