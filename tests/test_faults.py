"""Bad input gets one clear line on stderr and exit code 2; nothing saved is lost."""

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import ROOT, run_cli, run_main, trained_flags, tree_digest
from PIL import Image

from lenet_jax import checkpoint, cli, data, training
from lenet_jax.config import recipe
from lenet_jax.reporting import read_metrics


def _one_error_line(result, prefix="train.py: error:"):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    return lines[0]


def _train_main(capsys, *argv):
    return run_main("train", capsys, *argv)


def _copy_of(workdir: Path, tmp_path: Path) -> Path:
    """A copy of a shared workdir to resume: train.py writes its lock and owner files beside
    the run, and another test copying the shared one must not pick them up."""
    copy = tmp_path / "runs"
    shutil.copytree(workdir, copy, symlinks=True)
    return copy


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--preset", "lenet7"], "unknown --preset 'lenet7'; valid presets: original,"),
        (["--epochs", "0"], "--epochs must be positive, got 0"),
        (["--batch-size", "0"], "--batch-size must be in [1, 55000]"),
        (["--batch-size", "60000"], "--batch-size must be in [1, 55000] (the training set)"),
        (["--lr", "-1"], "--lr must be positive and finite, got -1.0"),
        (["--lr", "inf"], "--lr must be positive and finite, got inf"),
        (["--epochs", "1000000000"], "--epochs must be at most 2,497,074 at this batch size"),
        (["--val-size", "-5"], "--val-size must be in [0, 60000), got -5"),
        (["--resume", "--overwrite"], "--resume and --overwrite contradict each other"),
        (["--coordinator", "h:1"], "--coordinator, --num-processes and --process-id go with "
                                   "--distributed"),
        (["--distributed", "--num-processes", "2"], "give --coordinator, --num-processes and "
                                                    "--process-id together (or none)"),
        (["--distributed", "--coordinator", "nohost", "--num-processes", "2", "--process-id",
          "0"], "--coordinator must be HOST:PORT, got 'nohost'"),
        (["--distributed", "--coordinator", "h:1", "--num-processes", "2", "--process-id",
          "2"], "--process-id must be in [0, 2), got 2"),
        (["--name", ".."], "--name must be a plain directory name, got '..'"),
        (["--name", "a/b"], "--name must be a plain directory name, got 'a/b'"),
        # Flags for a short run, so that a check that let it through fails in seconds.
        (["--name", "best", "--preset", "relu_maxpool", "--limit-train", "512",
          "--val-size", "500", "--epochs", "1"],
         "--name cannot be 'best': that is the link to the latest run's"),
        (["--name", ".x.lock"], "--name must not start with '.' (hidden names are the run"),
        (["--name", "n" * 250], "--name must be at most 100 bytes of printable UTF-8 text"),
        (["--name", "bell\a"], "--name must be at most 100 bytes of printable UTF-8 text"),
        (["--workdir", ""], "--workdir must name a directory (. for this one)"),
        (["--workdir", "\udcff"], "--workdir must be UTF-8 text"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path, capsys, flags, message):
    result = _train_main(capsys, "--workdir", str(tmp_path / "runs"), *flags)
    assert message in _one_error_line(result)
    assert not (tmp_path / "runs" / "original").exists()


def test_train_maps_each_outcome_to_its_line_and_exit_code(tiny_dataset, tmp_path, capsys,
                                                           monkeypatch):
    """train.py's error boundary, each outcome raised where training would raise it (the
    real faults, a full disk and Ctrl-C, are the slow tests'): a failed write is exit 4,
    divergence exit 3, Ctrl-C exit 130, SIGTERM 143, each one line that says what is
    kept."""
    import errno

    monkeypatch.setattr(data, "load", lambda name, data_dir=None: tiny_dataset)
    run_dir = tmp_path / "runs" / "original"
    for raised, code, line in [
        (OSError(errno.ENOSPC, "No space left on device"), 4,
         f"train.py: error: cannot write to {run_dir}: No space left on device; the epochs "
         "saved before are kept"),
        (training.TrainingDivergedError(17, 1), 3,
         "train.py: error: loss became NaN/Inf at step 17 (epoch 1); stopped, no epoch was "
         "saved (try a smaller --lr)"),
        (training.TrainingDivergedError(17, 2), 3,
         f"train.py: error: loss became NaN/Inf at step 17 (epoch 2); stopped, the last good "
         f"checkpoint is kept in {run_dir} (try a smaller --lr)"),
        (KeyboardInterrupt(), 130, f"train.py: interrupted; resume with --resume ({run_dir})"),
        (cli.Terminated(), 143, f"train.py: terminated; resume with --resume ({run_dir})"),
    ]:
        def fail(config, dataset, run_dir, *args, raised=raised, **kwargs):
            if getattr(raised, "epoch", 1) > 1:  # an epoch was saved before
                (run_dir / "checkpoints" / "1").mkdir(parents=True)
            raise raised

        monkeypatch.setattr(training, "train_and_evaluate", fail)
        result = _train_main(capsys, "--workdir", str(tmp_path / "runs"), "--no-progress",
                             "--overwrite")
        assert (result.returncode, result.stderr.splitlines()) == (code, [line])


def test_an_unexpected_error_is_one_line_and_exit_70_with_the_traceback_in_a_file(
        tiny_dataset, tmp_path, capsys, monkeypatch):
    """The last resort of every tool's error boundary (``cli.guarded``): a bug is one line
    naming the file that holds its traceback, never a traceback on the terminal."""
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug in training")

    monkeypatch.setattr(data, "load", lambda name, data_dir=None: tiny_dataset)
    monkeypatch.setattr(training, "train_and_evaluate", bug)
    result = _train_main(capsys, "--workdir", str(tmp_path / "runs"), "--no-progress")
    assert result.returncode == 70
    (line,) = result.stderr.splitlines()
    prefix = "train.py: error: internal error: ZeroDivisionError: a bug in training; details in "
    assert line.startswith(prefix), line
    log = Path(line.removeprefix(prefix))
    assert 'raise ZeroDivisionError("a bug in training")' in log.read_text()
    log.unlink()


def test_a_ctrl_c_that_lands_in_a_callback_still_stops_the_tool(capsys):
    """Python hands an exception raised in a finaliser or a garbage collector's callback
    (JAX's runs after each collection) to sys.unraisablehook and carries on; a Ctrl-C
    that lands there used to be lost, and the tool trained on to exit 0. The boundary
    delivers it again: one line, exit 130."""
    class Finaliser:
        def __del__(self):
            raise KeyboardInterrupt

    def body() -> int:
        Finaliser()  # collected at once: its KeyboardInterrupt is "unraisable"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return 0

    assert cli.guarded("train.py", body) == 130
    assert capsys.readouterr().err == "train.py: interrupted\n"


def test_tracebacks_raised_in_other_threads_stay_off_a_failed_tools_terminal():
    """After a failed Orbax read, its other reads finish in TensorStore's threads at any
    moment up to the exit, each raising where nobody can catch it ("Event loop is
    closed"; Python prints such a traceback on stderr). The process shows the tool's line
    and nothing else, from the failure to the exit."""
    code = """if True:
        import sys, threading, time
        from lenet_jax import cli
        from lenet_jax.errors import UserError

        class Straggler:
            def __del__(self):
                raise RuntimeError("Event loop is closed")

        def stragglers():
            while True:
                Straggler()

        def body():
            threading.Thread(target=stragglers, daemon=True).start()
            time.sleep(0.05)
            raise UserError("cannot restore ckpt/3: a read failed")

        sys.setswitchinterval(1e-6)  # the threads take turns at every chance
        cli.run(lambda: cli.guarded("evaluate.py", body))
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert (result.returncode, result.stderr) == (
        2, "evaluate.py: error: cannot restore ckpt/3: a read failed\n")


def test_an_error_line_escapes_what_a_terminal_would_obey(capsys):
    from lenet_jax import cli

    hostile = "a\nb\x1b[2J\rc\td\x00e\u202ef"
    assert cli.one_line(hostile) == "a\\nb\\x1b[2J\\rc\\td\\x00e\\u202ef"
    assert cli.fail("train.py", f"no such file {hostile}") == 2
    assert capsys.readouterr().err == f"train.py: error: no such file {cli.one_line(hostile)}\n"


def test_evaluate_refuses_an_out_inside_the_checkpoint(trained_original, capsys):
    best = (trained_original / "original" / "best").resolve()
    before = tree_digest(trained_original)
    for inside in (best, best / "eval", best.parent / "eval"):
        result = run_main("evaluate", capsys, "--ckpt", str(trained_original / "best"), "--out",
                          str(inside))
        assert _one_error_line(result, "evaluate.py: error:") == (
            f"evaluate.py: error: --out {inside} is inside the checkpoint; choose another "
            "directory")
    assert tree_digest(trained_original) == before


def test_lenet_jax_commands_are_the_tools_themselves(tmp_path):
    """``python -m lenet_jax COMMAND`` (the ``lenet-jax`` console script) gives each
    tool's own lines and exit codes; ``--version`` is the package's; a missing or unknown
    command is one line, exit 2."""
    import tomllib

    module = run_cli("-m", "lenet_jax", "train", "--epochs", "0")
    assert (module.returncode, module.stdout, module.stderr) == (
        2, "", "train.py: error: --epochs must be positive, got 0\n")  # as train.py says it
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    version = run_cli("-m", "lenet_jax", "--version")
    assert (version.returncode, version.stdout) == (0, f"lenet-jax {declared}\n")
    for argv, said in ((["bogus"], "unknown command 'bogus'"), ([], "a command is needed")):
        result = run_cli("-m", "lenet_jax", *argv)
        assert result.returncode == 2 and result.stderr == (
            f"lenet-jax: error: {said}; choose train, evaluate, serve, export, info, site or read "
            "(--help says what each does)\n")


def test_a_bad_flag_is_one_line_and_exit_2_from_the_process(tmp_path):
    result = run_cli("train.py", "--workdir", str(tmp_path / "runs"), "--epochs", "-3")
    assert _one_error_line(result) == "train.py: error: --epochs must be positive, got -3"


@pytest.mark.slow  # kept out of the 2-minute default suite (CI runs it)
def test_distributed_outside_a_cluster_is_one_line(tmp_path):
    """A process of its own: jax.distributed must start before anything else in JAX."""
    result = run_cli("train.py", "--distributed", "--workdir", str(tmp_path / "runs"))
    assert _one_error_line(result) == (
        "train.py: error: --distributed: coordinator_address should be defined. (without "
        "--coordinator, --num-processes and --process-id, JAX reads them from a SLURM, "
        "Kubernetes or TPU-pod job)")


def test_unwritable_workdir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = _one_error_line(_train_main(capsys, "--workdir", str(blocker / "runs")))
    assert f"cannot write to --workdir {blocker / 'runs'}" in line


def test_existing_run_is_not_overwritten_without_asking(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "original"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("precious\n")
    line = _one_error_line(_train_main(capsys, "--workdir", str(tmp_path / "runs")))
    assert "already exists; pass --resume to continue it or --overwrite" in line
    assert (run_dir / "metrics.jsonl").read_text() == "precious\n"


def test_a_compilation_cache_that_cannot_be_used_is_a_note_and_the_work_goes_on(
        tmp_path, capsys, monkeypatch):
    """$LENET_JAX_CACHE naming a file: the compiled programs cannot be kept, which is
    said once, and JAX is not pointed at it (its own warnings reached the terminal for
    every program, and the tool went on compiling)."""
    import jax

    from lenet_jax import runtime

    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path / "a-file"))
    monkeypatch.setenv(runtime.COMPILATION_CACHE_ENV, "")
    before = jax.config.jax_compilation_cache_dir
    assert runtime.enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before
    assert capsys.readouterr().err.splitlines() == [
        f"note: the compilation cache cannot be used (Not a directory: "
        f"{tmp_path / 'a-file' / 'xla'}); compiling anew each time"]


def test_a_first_run_that_saved_nothing_does_not_block_a_rerun(tiny_dataset, tmp_path, capsys,
                                                               monkeypatch):
    """What a first run stopped before its first save leaves (an empty checkpoints
    directory, an empty log, TensorBoard's folder) is trained into without --overwrite;
    a run with a saved epoch or a log still is not (the test above)."""
    trained = []

    def train(config, dataset, run_dir, **kwargs):  # where training would start
        trained.append(run_dir)
        return {"epoch": 1, "test_accuracy": 0.5}

    monkeypatch.setattr(data, "load", lambda name, data_dir=None: tiny_dataset)
    monkeypatch.setattr(training, "train_and_evaluate", train)
    run_dir = tmp_path / "runs" / "relu_maxpool"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "tensorboard").mkdir()
    (run_dir / "metrics.jsonl").write_text("")
    result = _train_main(capsys, "--workdir", str(tmp_path / "runs"), "--preset", "relu_maxpool",
                         "--no-progress")
    assert (result.returncode, result.stderr, trained) == (0, "", [run_dir])
    (run_dir / "checkpoints" / "1").mkdir()  # once an epoch is saved, it blocks
    assert "already exists" in _one_error_line(_train_main(
        capsys, "--workdir", str(tmp_path / "runs"), "--preset", "relu_maxpool"))


def test_a_run_directory_that_is_a_link_is_refused_and_left_alone(trained_original, tmp_path,
                                                                 capsys):
    """--name naming a link (here to a real run) is refused before anything is written:
    a run name never resolves through a link into another run."""
    workdir = shutil.copytree(trained_original, tmp_path / "runs", symlinks=True)
    (workdir / "elsewhere").symlink_to("original")
    saved = tree_digest(workdir / "original")
    for flags in (["--resume"], ["--overwrite"], []):
        line = _one_error_line(_train_main(capsys, "--workdir", str(workdir), "--name",
                                           "elsewhere", *flags))
        assert line.endswith("elsewhere is a link; a run directory must be a real directory")
    assert tree_digest(workdir / "original") == saved
    assert (workdir / "elsewhere").is_symlink() and (workdir / "best").is_symlink()


@pytest.mark.slow
def test_divergence_after_a_good_epoch_names_the_step_and_keeps_that_epoch(tiny_dataset,
                                                                         tmp_path):
    """Epoch 1 trains well; in epoch 2 a corrupt label (no such class: a NaN loss) stops
    the run, naming the step; epoch 1's checkpoint and metrics are left as they were."""
    quiet = {"progress": False, "log": lambda _: None}
    run = tmp_path / "run"
    # A constant rate, so that a second epoch resumes (a cosine one spans the epochs).
    config = recipe("relu_avgpool_pad2", epochs=1, val_size=104, schedule="constant")
    training.train_and_evaluate(config, tiny_dataset, run, **quiet)
    saved = tree_digest(run / "checkpoints")
    labels = tiny_dataset.train.labels.copy()
    labels[5] = 10
    corrupt = data.Dataset("mnist", data.Split(tiny_dataset.train.images, labels),
                           tiny_dataset.test, tiny_dataset.class_names)
    longer = dataclasses.replace(config, epochs=2)
    # 600 training images, batch 64: epoch 2 is steps 10-19
    with pytest.raises(training.TrainingDivergedError, match=r"NaN/Inf at step 1\d \(epoch 2\)"):
        training.train_and_evaluate(longer, corrupt, run, resume=True, **quiet)
    assert checkpoint.RunCheckpoints(run).latest_epoch() == 1
    assert tree_digest(run / "checkpoints") == saved
    assert [r["epoch"] for r in read_metrics(run)] == [1]


# --- crash safety and checkpoint faults, through the CLIs on a slice of the real MNIST ---

QUICK = ["--preset", "relu_avgpool_pad2_dropout", "--epochs", "3", "--limit-train", "12000",
         "--val-size", "1000", "--augment", "--seed", "3", "--no-progress"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Three epochs on a slice of the real MNIST through train.py (slow tests only)."""
    workdir = tmp_path_factory.mktemp("runs")
    result = run_cli("train.py", *QUICK, "--workdir", str(workdir), "--name", "whole")
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_is_bit_identical(uninterrupted, tmp_path):
    workdir = tmp_path / "runs"
    command = [sys.executable, "train.py", *QUICK, "--workdir", str(workdir), "--name", "crash"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = workdir / "crash" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert process.poll() is None and time.time() < deadline, "epoch 1 never finished"
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2's training
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    checkpoints = workdir / "crash" / "checkpoints"
    assert checkpoint.RunCheckpoints(workdir / "crash").latest_epoch() < 3
    # A step half-written at a crash: never listed, never loaded.
    half = checkpoints / "3.orbax-checkpoint-tmp-1700000000000000"
    (half / "params").mkdir(parents=True)
    (half / "params" / "junk").write_bytes(b"\x00" * 10)

    result = run_cli("train.py", *QUICK, "--workdir", str(workdir), "--name", "crash", "--resume")
    assert result.returncode == 0, result.stderr
    whole, _ = checkpoint.restore_for_inference(uninterrupted / "whole" / "checkpoints" / "3")
    resumed, meta = checkpoint.restore_for_inference(checkpoints / "3")
    assert meta["epoch"] == 3
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(resumed),
                    strict=True):
        assert np.array_equal(a, b)
    epochs = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_a_run_directory_held_by_a_process_is_refused_naming_it(tmp_path, capsys):
    from lenet_jax import rundir

    run_dir = tmp_path / "runs" / "original"
    with rundir.exclusive(run_dir) as note:
        assert note is None
        line = _one_error_line(_train_main(capsys, "--workdir", str(tmp_path / "runs"),
                                           "--resume"))
    assert line == (f"train.py: error: run directory {run_dir} is being trained by process "
                    f"{os.getpid()} on {socket.gethostname()}; wait for it to finish or "
                    "choose another --name")
    assert not run_dir.exists()  # refused before anything was written
    assert not (run_dir.parent / ".original.owner").exists()  # let go on leaving


def _wait_for_epoch_1(process: subprocess.Popen, run_dir: Path) -> None:
    """Until ``process`` has committed epoch 1 (Orbax renames a step into place when it
    is whole), touching nothing in ``run_dir``."""
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "1").is_dir():
        assert process.poll() is None and time.time() < deadline, "epoch 1 never finished"
        time.sleep(0.1)


@pytest.mark.slow
def test_second_trainer_is_refused_and_a_killed_ones_lock_is_taken_over(tmp_path):
    """Two real train.py processes on one run directory: the second refuses at once,
    naming the first, which trains on unharmed; after kill -9, --resume takes over."""
    workdir = tmp_path / "runs"
    flags = ["--preset", "relu_maxpool", "--limit-train", "2000", "--val-size", "500",
             "--no-progress", "--workdir", str(workdir)]
    first = subprocess.Popen([sys.executable, "train.py", *flags, "--epochs", "1000"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = workdir / "relu_maxpool"
    _wait_for_epoch_1(first, run_dir)
    second = run_cli("train.py", *flags, "--epochs", "2", "--resume")
    assert _one_error_line(second) == (
        f"train.py: error: run directory {run_dir} is being trained by process {first.pid} "
        f"on {socket.gethostname()}; wait for it to finish or choose another --name")
    assert first.poll() is None  # unharmed, still training
    first.kill()
    assert first.wait() == -signal.SIGKILL
    saved = checkpoint.RunCheckpoints(run_dir).latest_epoch()
    params, meta = checkpoint.restore_for_inference(run_dir)
    assert meta["epoch"] == saved
    third = run_cli("train.py", *flags, "--epochs", str(saved + 1), "--resume")
    assert third.returncode == 0, third.stderr
    assert (f"train.py: taking over {run_dir} from process {first.pid} on "
            f"{socket.gethostname()}, which is gone") in third.stderr.splitlines()
    assert checkpoint.RunCheckpoints(run_dir).latest_epoch() == saved + 1


@pytest.mark.slow  # kept out of the 2-minute default suite (CI runs it)
def test_resuming_another_presets_run_is_refused_and_untouched(trained_original, tmp_path):
    workdir = _copy_of(trained_original, tmp_path)
    run_dir = workdir / "original"
    before = tree_digest(run_dir)
    flags = trained_flags("--workdir", str(workdir), "--name", "original", "--resume")
    result = run_cli("train.py", *flags, "--preset", "relu_maxpool")
    line = _one_error_line(result)
    assert "cannot resume: the run was trained with preset='original'" in line
    assert tree_digest(run_dir) == before


@pytest.mark.slow  # a run through the CLI: kept out of the 2-minute default suite
def test_resuming_a_finished_run_says_so_exits_0_and_changes_nothing(trained_original,
                                                                    tmp_path, capsys):
    workdir = _copy_of(trained_original, tmp_path)
    run_dir = workdir / "original"
    before = tree_digest(run_dir)
    result = _train_main(capsys, *trained_flags("--workdir", str(workdir), "--name",
                                                "original", "--resume", "--no-progress"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        f"train.py: {run_dir} has already trained 3 epochs; nothing to do. To train longer, "
        "its cosine schedule ends at epoch 3, so train a new run (--name, or --overwrite) "
        "with more --epochs")
    assert "Traceback" not in result.stderr
    assert tree_digest(run_dir) == before


def test_checkpoint_with_other_shapes_is_one_line(trained_original, tmp_path):
    step = tmp_path / "best" / "2"
    shutil.copytree(trained_original / "original" / "checkpoints" / "2", step)
    meta_file = step / "metadata" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["preset"] = "relu_maxpool"  # other layer shapes
    meta_file.write_text(json.dumps(meta))
    result = run_cli("evaluate.py", "--ckpt", str(step))
    line = _one_error_line(result, "evaluate.py: error:")
    assert f"cannot restore {step}" in line


@pytest.mark.slow
def test_evaluate_never_writes_into_a_checkpoint(trained_original, tmp_path, capsys):
    workdir = tmp_path / "runs"
    shutil.copytree(trained_original, workdir, symlinks=True)  # evaluate writes <run>/eval
    best = (workdir / "original" / "best").resolve()
    before = tree_digest(best)
    result = run_main("evaluate", capsys, "--ckpt", str(workdir / "best"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sum(map(sum, report["confusion_matrix"])) == 10_000  # the real MNIST test set
    assert (workdir / "original" / "eval" / "metrics.json").exists()
    inside = run_main("evaluate", capsys, "--ckpt", str(best), "--out", str(best / "eval"))
    assert "is inside the checkpoint" in _one_error_line(inside, "evaluate.py: error:")
    assert tree_digest(best) == before


@pytest.mark.slow  # a run through the CLI: kept out of the 2-minute default suite
def test_cli_divergence_names_the_step_exit_3(tmp_path, capsys):
    result = _train_main(capsys, "--preset", "relu_avgpool_pad2", "--lr", "1e6", "--epochs", "1",
                         "--limit-train", "2000", "--workdir", str(tmp_path), "--no-progress")
    assert result.returncode == 3, result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("train.py: error:")]
    assert len(errors) == 1 and "loss became NaN/Inf at step" in errors[0]


def test_corrupted_tfds_dir_is_reported_with_how_to_rebuild(fake_tfds, tmp_path, monkeypatch):
    data_dir = tmp_path / "tfds"
    shutil.copytree(fake_tfds[0], data_dir)
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path / "cache"))
    record = next((data_dir / "mnist").rglob("mnist-train.tfrecord*"))
    raw = bytearray(record.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = b"\xff" * 64
    record.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match=r"cannot read mnist .*delete .*mnist and run again"):
        data.load("mnist", data_dir, verify=False)


def test_runs_best_left_pointing_at_a_deleted_run_is_one_line(trained_original, tmp_path,
                                                              capsys):
    workdir = tmp_path / "runs"
    shutil.copytree(trained_original, workdir, symlinks=True)
    shutil.rmtree(workdir / "original")  # runs/best -> original/best, now gone
    for script, argv in [("evaluate", ["--ckpt", str(workdir / "best")]),
                         ("lenet_jax.cli.export", ["--ckpt", str(workdir / "best"), "--out",
                                                   str(tmp_path / "model")])]:
        line = _one_error_line(run_main(script, capsys, *argv), "")
        assert line.endswith(f"checkpoint path {workdir / 'best'} links to original/best, "
                             "which no longer exists (was its run deleted?)"), line


@contextlib.contextmanager
def _mounted(*mount_args: str, target: Path) -> Iterator[Path]:
    """``mount *mount_args target`` for the block (root only: a skip elsewhere)."""
    target.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", *mount_args, str(target)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here ({mounted.stderr.strip()}); run as root")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_earlier_epochs_restore(tmp_path):
    """train.py on a 3 MB tmpfs: the checkpoints fill it within a few epochs. The run
    ends with one line and exit 4, every epoch saved before restores, and a resume with
    room again goes on from there."""
    flags = ["--preset", "relu_maxpool", "--limit-train", "1000", "--val-size", "500",
             "--epochs", "8", "--no-progress"]
    with _mounted("-t", "tmpfs", "-o", "size=3m", "tmpfs", target=tmp_path / "small") as disk:
        result = run_cli("train.py", *flags, "--workdir", str(disk / "runs"))
        assert result.returncode == 4, result.stderr
        assert result.stderr.splitlines() == [
            f"train.py: error: cannot write to {disk / 'runs' / 'relu_maxpool'}: No space "
            "left on device; the epochs saved before are kept"]
        saved = checkpoint.RunCheckpoints(disk / "runs" / "relu_maxpool").latest_epoch()
        assert 1 <= saved < 8
        params, meta = checkpoint.restore_for_inference(disk / "runs" / "best")
        assert meta["epoch"] <= saved
        shutil.copytree(disk / "runs", tmp_path / "roomy", symlinks=True)
    resumed = run_cli("train.py", *flags, "--workdir", str(tmp_path / "roomy"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.RunCheckpoints(tmp_path / "roomy" / "relu_maxpool").latest_epoch() == 8


@pytest.mark.slow
def test_a_read_only_workdir_refuses_writes_in_one_line_and_still_serves_reads(
        trained_original, tmp_path, capsys):
    source = tmp_path / "source"
    shutil.copytree(trained_original, source, symlinks=True)
    with _mounted("--bind", "-o", "ro", str(source), target=tmp_path / "ro") as ro:
        before = tree_digest(ro)
        resume = _one_error_line(_train_main(
            capsys, *trained_flags("--workdir", str(ro), "--name", "original", "--resume")))
        assert resume == (f"train.py: error: cannot write to --workdir {ro}: Read-only file "
                          "system")
        report = _one_error_line(run_main("evaluate", capsys, "--ckpt", str(ro / "best")), "")
        assert report == (f"evaluate.py: error: cannot write to --out {ro / 'original'}/eval: "
                          "Read-only file system")
        picture = tmp_path / "one.png"
        Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(picture)
        predicted = run_main("evaluate", capsys, "--ckpt", str(ro / "best"), "--image",
                             str(picture))
        assert predicted.returncode == 0, predicted.stderr
        assert tree_digest(ro) == before


@pytest.mark.slow
def test_ctrl_c_mid_run_is_exit_130_with_how_to_resume(tmp_path):
    workdir = tmp_path / "runs"
    command = [sys.executable, "train.py", "--preset", "relu_maxpool", "--limit-train", "2000",
               "--val-size", "500", "--epochs", "1000", "--no-progress", "--workdir",
               str(workdir)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    run_dir = workdir / "relu_maxpool"
    _wait_for_epoch_1(process, run_dir)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.splitlines() == [f"train.py: interrupted; resume with --resume ({run_dir})"]
    params, meta = checkpoint.restore_for_inference(run_dir)
    assert meta["epoch"] == checkpoint.RunCheckpoints(run_dir).latest_epoch() >= 1
