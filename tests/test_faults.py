"""Bad input gets one clear line on stderr and exit code 2; nothing saved is lost."""

import pytest
from conftest import run_cli

from lenet_jax import checkpoint, training


def _one_error_line(result, prefix="train.py: error:"):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--variant", "lenet7"], "unknown --variant 'lenet7'; valid presets: original,"),
        (["--epochs", "0"], "--epochs must be positive, got 0"),
        (["--batch-size", "0"], "--batch-size must be in [1, 55000]"),
        (["--batch-size", "60000"], "--batch-size must be in [1, 55000] (the training set)"),
        (["--lr", "-1"], "--lr must be positive, got -1.0"),
        (["--val-size", "-5"], "--val-size must be in [0, 60000), got -5"),
        (["--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path, flags, message):
    result = run_cli("train.py", "--workdir", str(tmp_path / "runs"), *flags)
    assert message in _one_error_line(result)
    assert not (tmp_path / "runs" / "original").exists()


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = _one_error_line(run_cli("train.py", "--workdir", str(blocker / "runs")))
    assert f"cannot write to --workdir {blocker / 'runs'}" in line


def test_existing_run_is_not_overwritten_without_asking(tmp_path):
    run_dir = tmp_path / "runs" / "original"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("precious\n")
    line = _one_error_line(run_cli("train.py", "--workdir", str(tmp_path / "runs")))
    assert "already exists; pass --resume to continue it or --overwrite" in line
    assert (run_dir / "metrics.jsonl").read_text() == "precious\n"


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path):
    quiet = {"progress": False, "log": lambda _: None}
    good = training.TrainConfig(variant="relu_avgpool_pad2", epochs=1, val_size=104)
    training.train_and_evaluate(good, tiny_dataset, tmp_path / "run", **quiet)
    bad = training.TrainConfig(variant="relu_avgpool_pad2", epochs=2, val_size=104,
                               learning_rate=1e6)
    with pytest.raises(training.TrainingDivergedError, match=r"NaN/Inf at step \d+ \(epoch 1\)"):
        training.train_and_evaluate(bad, tiny_dataset, tmp_path / "fresh", **quiet)
    assert checkpoint.RunCheckpoints(tmp_path / "fresh").latest_epoch() is None
    assert checkpoint.RunCheckpoints(tmp_path / "run").latest_epoch() == 1
