"""The throughput benchmark runs end to end (tiny sizes) and reports every contender."""

import functools
import json
import sys

import pytest
from helpers import BLOCK_TENSORFLOW, ROOT, run_cli

SCRIPT = str(ROOT / "benchmarks" / "train_throughput.py")


@pytest.mark.slow
def test_benchmark_reports_every_contender_per_round(tmp_path):
    out = tmp_path / "results.json"
    run = run_cli(SCRIPT, "--preset", "relu_maxpool", "--steps", "4", "--repeats", "2",
                  "--skip", "torch", "torch-compile", "--json", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert [r["name"].split(" (")[0].split(",")[0] for r in results] == [
        "ours", "Flax example loop", "Flax example loop and model"]
    for r in results:
        assert len(r["images_per_second"]) == 2 and min(r["images_per_second"]) > 0
        assert r["compile_seconds"] > 0 and r["eval_seconds"] > 0
        assert 0.0 <= r["test_accuracy"] <= 1.0
    assert "ours / Flax example loop, this project's model: " in run.stdout
    assert "ours / Flax example loop and model: " in run.stdout


@pytest.mark.slow
def test_benchmark_rejects_bad_sizes():
    run = run_cli(SCRIPT, "--steps", "0")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].endswith(
        "--steps, --batch-size and --repeats must be positive")


@pytest.mark.slow
def test_training_and_saved_arrays_need_no_tensorflow(tmp_path, tiny_dataset):
    """A lent GPU machine has JAX but no TensorFlow/TFDS/tensorboardX: the training code
    must import and the saved arrays load there (benchmarks/gpu_check.sh)."""
    from lenet_jax import data

    data.save_arrays(tiny_dataset, tmp_path / "tiny.npz")
    code = BLOCK_TENSORFLOW + (
        "from lenet_jax import data, evaluation, training\n"
        f"d = data.load_arrays({str(tmp_path / 'tiny.npz')!r}, verify=False)\n"
        "print(len(d.train), len(d.test), d.class_names[3])\n"
    )
    run = run_cli("-c", code)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["704", "200", "3"]


@pytest.mark.slow
def test_startup_benchmark_times_every_tool_cold_and_warm_with_phases(tmp_path):
    out = tmp_path / "startup.json"
    run = run_cli(str(ROOT / "benchmarks" / "startup.py"), "--skip-torch", "--json", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert list(results) == ["train.py (tiny run)", "evaluate.py --ckpt", "evaluate.py --image",
                             "python -m lenet_jax.export"]
    for job, rows in results.items():
        assert list(rows) == ["ours cold", "ours warm"], job
        for row in rows.values():
            assert row["wall"] > 0 and row["phases"]["start"] > 0
            assert sum(row["phases"].values()) == pytest.approx(row["wall"])
            assert "work" in row["phases"], job
    assert {"data", "init", "compile", "work", "save"} <= set(
        results["train.py (tiny run)"]["ours warm"]["phases"])


@functools.cache
def _mutants():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mutants", ROOT / "benchmarks" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_listed_break_still_fits_the_code_and_names_tests_that_exist(tmp_path):
    """benchmarks/mutants.toml names code and tests by text, not by line: each text is
    found where it says, and each test it names is collected."""
    mutants = _mutants()
    listed = mutants.load()
    assert len(listed) >= 43
    for mutation in listed:
        mutation.apply(mutants.copy_checkout([mutation.file], tmp_path / "copy"))
    tests = sorted({t for m in listed for t in m.tests})
    collected = run_cli("-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", "-o",
                        "addopts=", *tests)
    assert collected.returncode == 0, collected.stdout[-3000:]
    found = {line.split("[")[0] for line in collected.stdout.splitlines() if "::" in line}
    assert found == set(tests)


@pytest.mark.slow
def test_every_listed_break_is_caught_by_the_tests():
    """benchmarks/mutants.py end to end: each break applied to a copy of the checkout,
    its tests run there, and every one caught."""
    result = run_cli("benchmarks/mutants.py", timeout=2400)
    # The lines of breaks not caught, not the tail of 150 "killed" ones.
    uncaught = [line for line in result.stdout.splitlines() if not line.startswith("killed")]
    assert result.returncode == 0, "\n".join(uncaught)[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary == f"{len(_mutants().load())} killed, 0 survived", summary


@pytest.mark.slow  # the benchmarks' smoke runs are in the slow set
def test_paper_table_reports_each_rows_seeds_from_the_kept_runs(tmp_path):
    """benchmarks/paper_table.py --report: the last pass's test error per row, mean ± std
    (n - 1) and min-max over the seeds kept, rows without runs left out, and the plot."""
    runs = {"paper": {str(s): {"train_error": [5.0, t / 2], "test_error": [3.0, t],
                               "test_rejected": 2.0, "seconds": 600.0}
                      for s, t in enumerate((1.0, 1.2, 0.8))},
            "Adam (the project's recipe)": {"0": {"train_error": [2.0, 0.1],
                                                  "test_error": [1.5, 0.7],
                                                  "test_rejected": 0.5, "seconds": 120.0}}}
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    run = run_cli(str(ROOT / "benchmarks" / "paper_table.py"), "--report", "--passes", "2",
                  "--runs", str(tmp_path / "runs.json"), "--out", str(tmp_path / "t.md"))
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in (tmp_path / "t.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| training")]
    assert rows == ["| paper | 1.00 ± 0.20% | 0.80-1.20% | 3 | 10.0 min | 0.95% (training "
                    "0.35%) |", "| Adam (the project's recipe) | 0.70 ± 0.00% | 0.70-0.70% "
                    "| 1 | 2.0 min | - |"]
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
