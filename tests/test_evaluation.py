import json
import os
import re

import jax
import numpy as np
import pytest
import reference
from helpers import png_header_only, run_cli
from PIL import Image

from lenet_jax import evaluation, models

NAMES = tuple("0123456789")


def test_confusion_matrix_of_a_known_case():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 9])
    predictions = np.array([0, 1, 1, 1, 2, 2, 2, 4])
    cm = evaluation.confusion_matrix(labels, predictions, 10)
    expected = np.zeros((10, 10), int)
    for t, p in zip(labels, predictions, strict=True):
        expected[t, p] += 1
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == 8 and np.trace(cm) == 5
    rows = evaluation.per_class_metrics(cm, NAMES)
    assert rows[1]["precision"] == pytest.approx(2 / 3)
    assert rows[1]["recall"] == pytest.approx(2 / 3)
    assert rows[2]["precision"] == pytest.approx(2 / 3) and rows[2]["recall"] == 1.0
    assert rows[1]["f1"] == pytest.approx(2 / 3) and rows[2]["f1"] == pytest.approx(0.8)
    assert rows[9] == {"class": "9", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert evaluation.most_confused(cm, 2) == [(0, 1, 1), (1, 2, 1)]


def test_confusion_and_per_class_metrics_match_a_numpy_reference():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 500)
    predictions = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 10, 500))
    predictions[predictions == 9] = 8  # a class never predicted: precision and F1 are 0
    cm = evaluation.confusion_matrix(labels, predictions, 10)
    np.testing.assert_array_equal(cm, reference.confusion(labels, predictions, 10))
    for k, row in enumerate(evaluation.per_class_metrics(cm, NAMES)):
        precision, recall, f1 = reference.precision_recall_f1(labels, predictions, k)
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
            (precision, recall, f1), abs=1e-12), k
        assert row["support"] == int(np.sum(labels == k))


def _report(seed=0, n=300):
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(10), n)
    labels = rng.integers(0, 10, n)
    return evaluation.Report(NAMES, labels, probabilities.argmax(-1), probabilities)


def test_report_matrix_sums_and_json_round_trips(tmp_path):
    report = _report()
    cm = report.confusion
    assert cm.sum() == 300 and np.trace(cm) == int((report.labels == report.predictions).sum())
    images = np.random.default_rng(0).integers(0, 255, (300, 28, 28, 1)).astype(np.uint8)
    files = evaluation.save_outputs(report, images, tmp_path / "eval", normalise=True)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report.to_json()))
    assert np.array_equal(np.array(saved["confusion_matrix"]), cm)
    assert saved["errors"] == 300 - np.trace(cm)
    for png in files[1:]:
        assert Image.open(png).size[0] > 400
    text = evaluation.format_report(report)
    assert f"accuracy {100 * report.accuracy:.2f}% ({report.errors} errors / 300)" in text
    assert "most confused:" in text


def _digit_picture(path, size=(90, 60), invert=False):
    """A thick dark '1' off-centre on a white photo-sized canvas."""
    canvas = np.full((size[1], size[0]), 250, np.uint8)
    canvas[10:50, 60:68] = 10
    if invert:
        canvas = 255 - canvas
    Image.fromarray(canvas).convert("RGB").save(path)


@pytest.mark.parametrize("invert", [False, True])
def test_user_image_becomes_a_centred_white_on_black_digit(tmp_path, invert):
    path = tmp_path / "one.jpg"
    _digit_picture(path, invert=invert)
    digit = evaluation.mnist_like(path)
    assert digit.shape == (28, 28, 1) and digit.dtype == np.uint8
    assert digit[0, 0, 0] == 0 and digit.max() > 200  # light background inverted
    ink = np.argwhere(digit[..., 0] > 127)
    assert ink[:, 0].max() - ink[:, 0].min() + 1 == pytest.approx(20, abs=1)  # fits 20 tall
    assert ink[:, 1].max() - ink[:, 1].min() + 1 <= 6  # the bar, not its page
    rows, cols = np.indices((28, 28))
    mass = digit[..., 0].astype(float)
    assert (rows * mass).sum() / mass.sum() == pytest.approx(14, abs=1)
    assert (cols * mass).sum() / mass.sum() == pytest.approx(14, abs=1)


def test_picture_over_the_pixel_budget_is_refused_from_its_header(tmp_path):
    for width, height in [(20000, 12000), (8000, 8000)]:  # over Pillow's own limit, and not
        bomb = tmp_path / f"{width}.png"
        bomb.write_bytes(png_header_only(width, height))
        with pytest.raises(evaluation.ImageError) as refused:
            evaluation.mnist_like(bomb)
        assert str(refused.value) == (f"{bomb}: {width * height:,} pixels is over the budget "
                                      "of 50 megapixels")
    with pytest.raises(evaluation.ImageError, match="not a readable image"):
        evaluation.mnist_like(png_header_only(200, 120))  # within budget: decoding fails


def test_unreadable_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(evaluation.ImageError, match="not a readable image"):
        evaluation.mnist_like(bad)
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    with pytest.raises(evaluation.ImageError, match="blank"):
        evaluation.mnist_like(blank)


def test_a_fifo_named_as_a_picture_is_refused_at_once_not_read(tmp_path):
    """A FIFO exists but holds no picture: opening it would block until something writes;
    it is refused by name, as a missing file is, for both readers."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for read in (evaluation.mnist_like, evaluation.number_strip):
        with pytest.raises(evaluation.ImageError) as refused:
            read(fifo)
        assert str(refused.value) == f"{fifo}: not a regular file"
        with pytest.raises(evaluation.ImageError) as refused:
            read(tmp_path / "gone.png")
        assert str(refused.value) == f"{tmp_path / 'gone.png'}: no such file"


def test_evaluation_reproduces_the_logged_accuracy(trained_original, mnist_sample):
    """The report on the test split in chunks of 64 (the last one padded) counts the
    errors the training log counted, and predicts each image as the NumPy reference does."""
    from lenet_jax import checkpoint

    params, metadata = checkpoint.restore_for_inference(trained_original / "best")
    module, _ = models.create_model(metadata["preset"])
    test = mnist_sample.test
    report = evaluation.run(module, params, test.images, test.labels, NAMES, batch_size=64)
    # Counts, not float accuracies: 1,000 images, so a count is exact.
    assert report.errors == round((1 - metadata["metrics"]["test_accuracy"]) * len(test))
    assert 0 < report.errors < len(test) // 2
    reference.use_codes(models.rbf_codes())
    expected = reference.forward(jax.device_get(params), test.images, "original")["logits"]
    agree = np.mean(report.predictions == expected.argmax(-1))
    assert agree >= 0.998, agree  # float32 against float64: a near tie may differ


def test_non_digit_shares_count_what_the_rule_refuses(trained_original):
    """With a rule that refuses everything every share is 1; with one that refuses
    nothing, a share is that kind's pictures the reader finds blank; with the real rule,
    each picture counts as the rule says."""
    import dataclasses

    predictor = evaluation.Predictor.load(trained_original / "best")
    kinds, images = evaluation.read_non_digits()
    assert len(kinds) == 90
    unread = np.array([image is None for image in images])
    refuse_all = dataclasses.replace(predictor.rule, threshold=-np.inf)
    refuse_none = dataclasses.replace(predictor.rule, threshold=np.inf, confidence=0.0, whole=0.0)
    shares = evaluation.non_digit_rejection(predictor.module, predictor.params, refuse_all)
    assert shares == {"noise": 1.0, "specks": 1.0, "shape": 1.0, "letter": 1.0, "all": 1.0}
    shares = evaluation.non_digit_rejection(predictor.module, predictor.params, refuse_none)
    for kind in ("noise", "specks", "shape", "letter"):
        assert shares[kind] == pytest.approx(unread[kinds == kind].mean()), kind
    answers = predictor.answer(np.stack([i for i in images if i is not None]))
    refused = unread.copy()
    refused[~unread] = [a.rejected for a in answers]
    shares = evaluation.non_digit_rejection(predictor.module, predictor.params, predictor.rule)
    assert shares["all"] == pytest.approx(refused.mean())


def test_cli_predicts_images_and_reports_bad_files_per_file(trained_original, tmp_path,
                                                            capsys):
    import evaluate

    good = tmp_path / "one.png"
    _digit_picture(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    code = evaluate.main(["--ckpt", str(trained_original / "best"), "--image", str(good),
                          str(bad)])
    out, err = capsys.readouterr()
    assert code == 2
    line = next(x for x in out.splitlines() if x.startswith(str(good)))
    top3, refused = r"(\d \d+\.\d%, ){2}\d \d+\.\d%", r"not a digit \(closest: \d, \d+%\)"
    assert re.fullmatch(rf"{re.escape(str(good))}: ({top3}|{refused})", line), line
    errors = [x for x in err.splitlines() if x.startswith("evaluate.py: error")]
    assert errors == [f"evaluate.py: error: {bad}: not a readable image (UnidentifiedImageError)"]


@pytest.mark.slow  # kept out of the 2-minute default suite (CI runs it)
def test_cli_predicts_a_folder_in_one_batch_as_json_and_explains_each(trained_original,
                                                                     tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    _digit_picture(folder / "b.png")
    _digit_picture(folder / "a.jpg", invert=True)
    (folder / "c.png").write_bytes(b"\x89PNG broken")
    (folder / "notes.txt").write_text("not a picture: not listed")
    out = tmp_path / "out"
    result = run_cli("evaluate.py", "--ckpt", str(trained_original / "best"), "--image",
                     str(folder), str(tmp_path / "missing.png"), "--json", "--explain",
                     "--out", str(out))
    assert result.returncode == 2, result.stderr  # some failed
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(folder / "a.jpg"), str(folder / "b.png")]
    for record in records:
        probabilities = [t["probability"] for t in record["top3"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    errors = [x for x in result.stderr.splitlines() if x.startswith("evaluate.py: error")]
    assert errors == [f"evaluate.py: error: {tmp_path / 'missing.png'}: no such file or directory",
                      f"evaluate.py: error: {folder / 'c.png'}: not a readable image "
                      "(UnidentifiedImageError)"]
    figures = sorted((out / "explain").iterdir())
    assert [f.name for f in figures] == ["000-a.png", "001-b.png"]
    assert Image.open(figures[0]).size == (1200, 640)


def test_cli_reports_the_split_asked_for_and_refuses_other_classes(trained_original,
                                                                  mnist_sample, tmp_path,
                                                                  capsys, monkeypatch):
    """evaluate.py --split train reports on the 3,500 training images, the default on the
    1,000 test ones (the data set is the real sample, handed in for data.load), and on the
    generated non-digits only with --non-digits; a data set whose classes are not the
    checkpoint's is one line and exit 2."""
    from helpers import run_main

    from lenet_jax import data

    loaded = []
    monkeypatch.setattr(data, "load", lambda name, data_dir=None: loaded.append(name) or dataset)
    dataset = mnist_sample
    for split, size, more in (("train", 3500, []), ("test", 1000, ["--non-digits"])):
        result = run_main("evaluate", capsys, "--ckpt", str(trained_original / "best"),
                          "--split", split, "--out", str(tmp_path / split), "--json", *more)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["examples"] == size
        # The non-digit report only when asked (the fixture's rule, 3 epochs on 2,000
        # digits, refuses 56% of them; the 10-epoch recipe's: tests/test_styles.py).
        if more:
            assert report["non_digits_rejected"]["all"] >= 0.4
        else:
            assert report["non_digits_rejected"] is None
        labels = getattr(mnist_sample, split).labels
        assert [row["support"] for row in report["per_class"]] == np.bincount(
            labels, minlength=10).tolist()
    dataset = data.Dataset("fashion_mnist", mnist_sample.train, mnist_sample.test,
                           ("T-shirt/top", *("x" * 9)))
    result = run_main("evaluate", capsys, "--ckpt", str(trained_original / "best"), "--dataset",
                      "fashion_mnist", "--out", str(tmp_path / "other"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["evaluate.py: error: the checkpoint was trained on "
                                          "mnist; fashion_mnist has other classes"]
    assert loaded == ["mnist", "mnist", "fashion_mnist"]


@pytest.mark.parametrize("make", ["missing", "empty", "garbage", "truncated", "arrays"])
def test_cli_bad_checkpoint_is_one_line_and_exit_2(trained_original, tmp_path, capsys, make):
    import shutil
    import subprocess

    import evaluate

    workdir = trained_original
    target = tmp_path / "ckpt"
    if make == "empty":
        target.mkdir()
    elif make == "garbage":
        (target / "5" / "metadata").mkdir(parents=True)
        (target / "5" / "metadata" / "metadata").write_text("{not json")
    elif make == "truncated":
        shutil.copytree(workdir / "original" / "checkpoints", target)
        step = max(p for p in target.iterdir() if p.name.isdigit())
        for f in (step / "params").rglob("*"):
            if f.is_file() and f.stat().st_size > 100:
                f.write_bytes(f.read_bytes()[:50])
    elif make == "arrays":  # the manifest whole, every array's bytes cut in half
        shutil.copytree(workdir / "original" / "checkpoints", target)
        step = max(p for p in target.iterdir() if p.name.isdigit())
        for chunk in (step / "params").rglob("ocdbt.process_0/d/*"):
            chunk.write_bytes(chunk.read_bytes()[:chunk.stat().st_size // 2])
    if make == "truncated":  # as a process: nothing from deep inside Orbax gets out
        result = run_cli("evaluate.py", "--ckpt", str(target))
    elif make == "arrays":  # nor at exit, from the reads still running when one failed
        # (whether any still runs is down to timing: test_faults.py's
        # test_tracebacks_raised_in_other_threads_stay_off_a_failed_tools_terminal
        # provokes them at every run)
        result = run_cli("evaluate.py", "--ckpt", str(step))
    else:  # the same main, in this process
        code = evaluate.main(["--ckpt", str(target)])
        result = subprocess.CompletedProcess([], code, *capsys.readouterr())
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error:"), result.stderr
    if make == "arrays":  # the reader's words, without the object Orbax appends
        assert lines[0].startswith(f"evaluate.py: error: cannot restore {step}: "), lines[0]
        assert "Error reading" in lines[0] and "TensorStore" not in lines[0], lines[0]
