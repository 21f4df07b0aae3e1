"""The trained weights shipped in the package (lenet_jax.zoo, issue #28): each file is the
one its card names (SHA-256, size, parameter count), each model makes the mistakes its
card counts on real test digits, a damaged or missing file is refused in one line, and
every command that takes --ckpt takes --pretrained."""

import json
import shutil

import jax
import numpy as np
import pytest
from helpers import ROOT, run_cli

import lenet_jax
from lenet_jax import data, models, zoo

SHIPPED = [(dataset, preset) for dataset, presets in zoo.cards().items() for preset in presets]


def test_every_preset_is_shipped_trained_on_mnist_and_the_best_fashion_one():
    assert sorted(p for d, p in SHIPPED if d == "mnist") == sorted(models.PRESETS)
    assert [p for d, p in SHIPPED if d == "fashion_mnist"] == ["relu_avgpool_pad2"]


@pytest.mark.parametrize(("dataset", "preset"), SHIPPED)
def test_shipped_file_is_the_cards_and_holds_the_presets_parameters(dataset, preset):
    card = zoo.card(preset, dataset)
    blob = (ROOT / "lenet_jax" / "trained" / card["file"]).read_bytes()
    assert (len(blob), zoo.weights_digest(blob)) == (card["bytes"], card["sha256"])
    model, params, metadata = lenet_jax.pretrained(preset, dataset)
    assert (metadata["preset"], metadata["dataset"]) == (preset, dataset)
    assert metadata["rejection"] is not None  # runs/best: it says "not a digit" too
    assert metadata["epoch"] == card["epoch"] and card["epochs"] == 10
    assert models.count_params(params) == models.count_params(
        models.init_params(model, jax.random.key(0)))
    # float32 weights and little else: 4 bytes a parameter, under 2% of framing
    assert 4 * models.count_params(params) < len(blob) < 1.02 * 4 * models.count_params(params)


@pytest.mark.parametrize("preset", sorted(models.PRESETS))
def test_shipped_mnist_model_makes_its_cards_mistakes_on_1000_real_test_digits(
        preset, mnist_sample):
    model, params, _ = lenet_jax.pretrained(preset)
    images, labels = mnist_sample.test.images, mnist_sample.test.labels
    assert len(labels) == 1000  # benchmarks/pretrained.py counted on these (tests_sample)
    wrong = lenet_jax.predict(model, params, images).argmax(-1) != labels
    assert int(wrong.sum()) == zoo.card(preset)["sample_test_errors"]


@pytest.mark.slow
@pytest.mark.mnist
@pytest.mark.parametrize(("dataset", "preset"), SHIPPED)
def test_shipped_model_reproduces_its_cards_test_accuracy_on_the_whole_test_set(
        dataset, preset):
    card = zoo.card(preset, dataset)
    model, params, _ = lenet_jax.pretrained(preset, dataset)
    test = data.load(dataset).test
    wrong = lenet_jax.predict(model, params, test.images).argmax(-1) != test.labels
    assert (len(wrong), int(wrong.sum())) == (card["test_examples"], card["test_errors"])
    assert f"{100 * (1 - wrong.mean()):.2f}" == f"{100 * card['test_accuracy']:.2f}"


@pytest.fixture
def copied_folder(tmp_path, monkeypatch):
    folder = tmp_path / "trained"
    shutil.copytree(ROOT / "lenet_jax" / "trained", folder)
    monkeypatch.setattr(zoo, "_folder", lambda: folder)
    return folder


def test_a_damaged_or_missing_weights_file_is_refused_in_words(copied_folder):
    path = copied_folder / zoo.card("original")["file"]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1  # one bit of one weight
    path.write_bytes(bytes(blob))
    with pytest.raises(zoo.PretrainedError, match=r"^the trained original \(mnist\) is "
                       r"damaged: the SHA-256 of mnist/original.msgpack is not the card's"):
        lenet_jax.pretrained("original")
    path.unlink()
    described = copied_folder / "mnist" / "relu_maxpool.json"
    described.write_text(described.read_text() + " ")  # still JSON, not the same bytes
    with pytest.raises(zoo.PretrainedError, match="relu_maxpool.json is not the card's"):
        lenet_jax.pretrained("relu_maxpool")
    with pytest.raises(zoo.PretrainedError, match=r"original \(mnist\) is missing"):
        lenet_jax.pretrained("original")
    (copied_folder / zoo.CARDS).write_text("{not json")
    with pytest.raises(zoo.PretrainedError, match="cards of trained weights are unreadable"):
        lenet_jax.pretrained("tanh_avgpool")


def test_an_unknown_name_lists_what_is_shipped():
    with pytest.raises(zoo.PretrainedError) as raised:
        lenet_jax.pretrained("lenet7")
    message = str(raised.value)
    assert message.startswith("no trained 'lenet7' on mnist is shipped (shipped: mnist: ")
    assert "fashion_mnist: relu_avgpool_pad2" in message
    with pytest.raises(zoo.PretrainedError, match="no trained 'original' on fashion_mnist"):
        lenet_jax.pretrained("original", "fashion_mnist")
    assert zoo.parse_name("fashion_mnist/relu_avgpool_pad2") == ("relu_avgpool_pad2",
                                                                 "fashion_mnist")
    assert zoo.parse_name("original") == ("original", "mnist")


def test_info_lists_the_shipped_models_and_shows_a_card():
    listed = run_cli("-m", "lenet_jax", "info")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line and "%" in line]
    readers = [f"{zoo.NUMBERS}/{p}:" for p in zoo.cards(zoo.NUMBERS_CARDS)[zoo.NUMBERS]]
    assert rows == [p if d == "mnist" else f"{d}/{p}" for d, p in SHIPPED] + readers
    assert readers == ["numbers/original:"]
    reader = run_cli("-m", "lenet_jax", "info", "numbers/original")
    numbers = zoo.card("original", zoo.NUMBERS)
    assert f"{100 * numbers['numbers_read']:.2f}% of 2,000 test strips" in reader.stdout
    card = zoo.card("relu_avgpool_pad2", "fashion_mnist")
    shown = run_cli("-m", "lenet_jax", "info", "fashion_mnist/relu_avgpool_pad2")
    assert shown.returncode == 0, shown.stderr
    assert f"{100 * card['test_accuracy']:.2f}%" in shown.stdout
    assert card["command"] in shown.stdout and card["sha256"][:16] in shown.stdout
    unknown = run_cli("-m", "lenet_jax", "info", "lenet7")
    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert unknown.stderr.startswith("lenet-jax info: error: no trained 'lenet7' on mnist")
    assert unknown.stderr.count("\n") == 1


@pytest.mark.slow
def test_evaluate_reads_a_picture_with_the_shipped_model(tmp_path, mnist_sample):
    from PIL import Image

    digit = mnist_sample.test.images[0, ..., 0]
    Image.fromarray(digit).save(tmp_path / "digit.png")
    result = run_cli("evaluate.py", "--pretrained", "original", "--image",
                     str(tmp_path / "digit.png"), "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["top3"][0]["class"] == str(mnist_sample.test.labels[0])
    both = run_cli("evaluate.py", "--pretrained", "original", "--ckpt", str(tmp_path))
    assert both.returncode == 2 and both.stderr.count("\n") == 1
    assert "not allowed with argument" in both.stderr
    neither = run_cli("-m", "lenet_jax.export", "--out", str(tmp_path / "m"))
    assert neither.returncode == 2
    assert "one of the arguments --ckpt --pretrained is required" in neither.stderr


@pytest.mark.slow
def test_export_writes_the_shipped_model(tmp_path, mnist_sample):

    result = run_cli("-m", "lenet_jax.export", "--pretrained", "relu_maxpool", "--out",
                     str(tmp_path))
    assert result.returncode == 0, result.stderr
    exported = jax.export.deserialize((tmp_path / "lenet.jax").read_bytes())
    images = mnist_sample.test.images[:16]
    model, params, _ = lenet_jax.pretrained("relu_maxpool")
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(exported.call(images))),
                               lenet_jax.predict(model, params, images), atol=1e-5)


def test_info_into_a_closed_pipe_stops_quietly():
    """`lenet-jax info | head -1`: the reader goes away; no traceback, no "internal
    error", exit 141 as a shell's SIGPIPE."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    result = subprocess.run([sys.executable, "-m", "lenet_jax", "info"], stdout=write,
                            stderr=subprocess.PIPE, cwd=ROOT, timeout=120)
    os.close(write)
    assert (result.returncode, result.stderr) == (141, b"")
