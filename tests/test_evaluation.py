import json
import re

import jax
import numpy as np
import pytest
from conftest import png_header_only, run_cli
from PIL import Image

from lenet_jax import evaluation, models, training

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
    assert rows[9] == {"class": "9", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert evaluation.most_confused(cm, 2) == [(0, 1, 1), (1, 2, 1)]


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


def test_evaluation_reproduces_the_logged_accuracy(trained_original, tiny_dataset):
    from lenet_jax import checkpoint

    workdir = trained_original
    params, metadata = checkpoint.restore_for_inference(workdir / "best")
    module, _ = models.create_model(metadata["preset"])
    report = evaluation.run(module, params, tiny_dataset.test.images, tiny_dataset.test.labels,
                            NAMES, batch_size=64)
    assert report.accuracy == pytest.approx(metadata["metrics"]["test_accuracy"], abs=1e-9)
    logits = training.predict_logits(module, params, jax.numpy.asarray(tiny_dataset.test.images))
    assert np.array_equal(report.predictions, np.asarray(logits).argmax(-1))


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
    assert Image.open(figures[0]).size == (960, 880)


def test_explain_panels_are_the_models_own_outputs(trained_original, tiny_dataset):
    """Every panel is what model.apply computes: shapes, one C1 map recomputed by hand
    from the parameters, F6 as the paper's 7x12 picture beside the nearest code."""
    from lenet_jax import checkpoint, explain

    params, metadata = checkpoint.restore_for_inference(trained_original / "best")
    module, _ = models.create_model("original")
    image = tiny_dataset.test.images[3]
    drawn = explain.panels(module, params, image)
    x = models.preprocess(image[None], module.preset)
    logits = module.apply({"params": params}, x)
    shapes = {name: panel.shape for name, panel in drawn.items()}
    closest = int(np.argmax(logits[0]))  # logits are -scale * squared distance
    assert shapes == {"input": (32, 32), "C1": (28, 28, 6), "S2": (14, 14, 6),
                      "C3": (10, 10, 16), "S4": (5, 5, 16), "F6": (12, 7),
                      f"closest RBF code: {closest}": (12, 7), "probabilities": (10,)}
    np.testing.assert_allclose(drawn["probabilities"], jax.nn.softmax(logits[0]), rtol=1e-5)
    kernel, bias = params["C1"]["kernel"][..., 2:3], params["C1"]["bias"][2]
    c1_map = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(drawn["C1"][..., 2], models.scaled_tanh(c1_map + bias)[0, ..., 0],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(drawn[f"closest RBF code: {closest}"].ravel(),
                                  models.rbf_codes()[closest])


@pytest.mark.parametrize("make", ["missing", "empty", "garbage", "truncated"])
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
    if make == "truncated":  # as a process: nothing from deep inside Orbax gets out
        result = run_cli("evaluate.py", "--ckpt", str(target))
    else:  # the same main, in this process
        code = evaluate.main(["--ckpt", str(target)])
        result = subprocess.CompletedProcess([], code, *capsys.readouterr())
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error:"), result.stderr
    assert "Traceback" not in result.stderr
