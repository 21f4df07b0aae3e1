"""Data parallel over 8 (forced host) devices, and the exported model."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import ROOT

from lenet_jax import checkpoint, cli
from lenet_jax.cli import distributed

EIGHT_DEVICES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from helpers import make_split
    from lenet_jax import cli, training
    from lenet_jax.config import ConfigError, recipe
    from lenet_jax.data import Dataset
    assert jax.device_count() == 8, jax.devices()
    dataset = Dataset("mnist", make_split(1024, 0), make_split(256, 1), tuple("0123456789"))
    out = {}
    for devices in (1, 8):
        config = recipe("relu_avgpool_pad2_dropout", epochs=1, batch_size=64, val_size=128,
                        devices=devices, learning_rate=1e-3)
        record = training.train_and_evaluate(config, dataset, sys.argv[1] + f"/d{devices}",
                                             progress=False, log=lambda _: None)
        out[devices] = record["test_accuracy"]
    try:
        training.make_mesh(8, batch_size=60)
    except ConfigError as err:
        out["error"] = [err.field, cli.describe(err)]
    print(json.dumps(out))
""")


TWO_PROCESS_FLAGS = ["--preset", "relu_maxpool", "--limit-train", "2048", "--val-size", "512",
                     "--batch-size", "64", "--no-progress"]


def _start_processes(workdir: Path, processes: int, devices: int, *flags: str,
                     slurm: bool = False) -> list:
    """train.py as ``processes`` real processes of ``devices`` CPU devices each, joined
    through a coordinator on a free port of 127.0.0.1: by the README's flags, or by the
    variables a SLURM job step sets (JAX's cluster detection); each process with the
    file that takes its output."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", LENET_JAX_JOIN_TIMEOUT="20", TMPDIR=str(workdir.parent))
    port = _free_port(range(61440, 65536) if slurm else range(0, 1))
    joined = (["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes",
               str(processes)] if processes > 1 and not slurm else [])
    slurm_job = dict(SLURM_JOB_ID=str(port - 61440), SLURM_STEP_NODELIST="127.0.0.1",
                     SLURM_NTASKS=str(processes))  # JAX's port for it: 61440 + id % 4096
    logs = [workdir.parent / f"{workdir.name}-{time.monotonic_ns()}-{i}.log"
            for i in range(processes)]  # files, not pipes: an undrained pipe stalls a peer
    running = []
    for i, log in enumerate(logs):
        process_env = dict(env, **slurm_job, SLURM_PROCID=str(i), SLURM_LOCALID=str(i)) \
            if slurm else env
        with log.open("w") as out:
            running.append((subprocess.Popen(
                [sys.executable, "train.py", *TWO_PROCESS_FLAGS, *flags, "--workdir",
                 str(workdir), *(["--distributed"] if slurm else joined),
                 *(["--process-id", str(i)] if joined else [])],
                cwd=ROOT, env=process_env, stdout=out, stderr=subprocess.STDOUT), log))
    return running


def _free_port(candidates: range) -> int:
    """A port of ``candidates`` that 127.0.0.1 can listen on now (0: any)."""
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError(f"no free port in {candidates}")


def _train_as_processes(workdir: Path, processes: int, devices: int, *flags: str,
                        slurm: bool = False) -> list:
    """(output, exit code) of each process of ``_start_processes``, once all have ended."""
    running = _start_processes(workdir, processes, devices, *flags, slurm=slurm)
    codes = [process.wait(timeout=600) for process, _ in running]
    return [(("", log.read_text()), code) for (_, log), code in zip(running, codes, strict=True)]


def _max_difference(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                               strict=True))


@pytest.mark.slow
def test_two_processes_train_as_one_and_resume(tmp_path):
    """2 processes x 4 devices give the parameters of 1 x 8 and 1 x 1 (float rounding);
    process 0 alone writes metrics and TensorBoard, the checkpoint is written once and
    one process restores it, and --resume works with two processes."""
    runs = {}
    for processes, devices in [(2, 4), (1, 8), (1, 1)]:
        workdir = tmp_path / f"{processes}x{devices}"
        outcomes = _train_as_processes(workdir, processes, devices, "--epochs", "1")
        for (_, err), code in outcomes:
            assert code == 0, err[-3000:]
        runs[processes, devices] = workdir / "relu_maxpool"
    params = {key: checkpoint.restore_for_inference(run)[0] for key, run in runs.items()}
    assert _max_difference(params[2, 4], params[1, 8]) < 1e-6
    assert _max_difference(params[2, 4], params[1, 1]) < 1e-6
    two = runs[2, 4]
    assert [json.loads(x)["epoch"] for x in (two / "metrics.jsonl").read_text().splitlines()] \
        == [1]
    assert len(list((two / "tensorboard").iterdir())) == 1
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["1"]
    for (_, err), code in _train_as_processes(two.parent, 2, 4, "--epochs", "2", "--resume"):
        assert code == 0, err[-3000:]
    assert [json.loads(x)["epoch"] for x in (two / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2]
    _, meta = checkpoint.restore_for_inference(two)
    assert meta["epoch"] == 2


@pytest.mark.slow
def test_a_slurm_job_step_is_detected_without_the_flags(tmp_path):
    """``--distributed`` alone, in the environment SLURM gives each task of a step:
    JAX finds the coordinator, count and index, and the two processes train as one."""
    outcomes = _train_as_processes(tmp_path / "w", 2, 1, "--epochs", "1", slurm=True)
    for (_, output), code in outcomes:
        assert code == 0, output[-3000:]
        assert "on cpu x2, compiled" in output  # one mesh over both processes' devices
    _, meta = checkpoint.restore_for_inference(tmp_path / "w" / "relu_maxpool")
    assert meta["epoch"] == 1


@pytest.mark.slow
def test_a_killed_process_ends_the_other_in_one_line_keeping_its_epochs(tmp_path):
    """kill -9 of process 1 mid-run: process 0 ends within the heartbeat timeout, exit 5,
    one line and no traceback (JAX's own end is a C++ abort); epoch 1 stays restorable."""
    (zero, zero_log), (one, _) = _start_processes(tmp_path / "w", 2, 4, "--epochs", "50")
    deadline = time.monotonic() + 300
    while "epoch   2/50" not in zero_log.read_text():
        assert zero.poll() is None and time.monotonic() < deadline, zero_log.read_text()
        time.sleep(0.2)
    one.kill()
    killed = time.monotonic()
    assert zero.wait(timeout=120) == cli.EXIT_PEER_LOST
    assert time.monotonic() - killed < distributed.HEARTBEAT_TIMEOUT + 10
    output = zero_log.read_text()
    assert "Traceback" not in output and "Check failure" not in output
    assert output.splitlines()[-1].startswith(
        "train.py: error: another process of this run stopped (")
    assert output.splitlines()[-1].endswith(
        "); the saved epochs are kept: start every process again with --resume")
    _, meta = checkpoint.restore_for_inference(tmp_path / "w" / "relu_maxpool")
    assert meta["epoch"] >= 2


@pytest.mark.slow
def test_a_missing_coordinator_is_one_line_within_the_join_timeout(tmp_path):
    env = dict(os.environ, LENET_JAX_JOIN_TIMEOUT="3")
    port = _free_port(range(0, 1))  # nobody listens there
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "train.py", *TWO_PROCESS_FLAGS, "--workdir", str(tmp_path),
         "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
         "--process-id", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"train.py: error: --coordinator 127.0.0.1:{port}: no process 0 there after 3 s "
        "(Connection refused)"]
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", EIGHT_DEVICES, str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["1"] == out["8"]  # same accuracy
    assert out["error"] == ["batch_size", "--batch-size 60 does not divide over 8 devices"]
    one, _ = checkpoint.restore_for_inference(tmp_path / "d1" / "checkpoints" / "1")
    eight, _ = checkpoint.restore_for_inference(tmp_path / "d8" / "checkpoints" / "1")
    diffs = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel() for a, b in zip(
        jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(eight), strict=True)])
    # The all-reduce sums in another order: float-rounding differences, which Adam can
    # turn into up to one lr-sized step on a near-zero gradient.
    assert np.median(diffs) < 1e-6 and diffs.max() <= 2e-3, (np.median(diffs), diffs.max())
