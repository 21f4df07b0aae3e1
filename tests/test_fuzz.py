"""Property-based fuzzing (hypothesis, seeded) of everything a user types or hands over:
the flags of train.py, evaluate.py and export, the image reader, and damaged
checkpoints. Every outcome is success or one line on stderr with a documented exit code;
an exception escaping ``main`` is the traceback a user would see, and fails the test."""

import contextlib
import io
import json
import re
import shutil
import tempfile
import threading
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from helpers import png_header_only, trained_flags, tree_digest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from lenet_jax import cli, evaluation

SEEDED = settings(derandomize=True, database=None, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])

# What a shell can hand a program: no NUL; bytes that are not UTF-8 arrive as lone
# surrogates (Python's surrogateescape).
ARGV_TEXT = st.one_of(
    st.text(st.characters(exclude_characters="\x00/", exclude_categories=("Cs",)), max_size=12),
    st.binary(min_size=1, max_size=6).map(lambda b: b.replace(b"\x00", b"x").replace(b"/", b"x")
                                          .decode("utf-8", "surrogateescape")),
)
NUMBERS = st.one_of(
    st.integers(-3, 70).map(str),  # mostly plausible, so the checks after parsing run
    st.integers(-2**70, 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e999", "0", "-0", "0x10", "1_000", " 3",
                     "", "٣"]),
)
PLACES = st.sampled_from(["a-file", "a-dir", "missing", "a-file/below", ".", "..", ""])


def _enter_places(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in ``root``, which holds the file and the directory ``PLACES`` name."""
    monkeypatch.chdir(root)
    if not (root / "a-file").exists():
        (root / "a-file").write_text("not a directory")
        (root / "a-dir").mkdir()


def _choices(*valid: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(valid), ARGV_TEXT)


SWITCH = st.none()  # a flag that takes no value
JUNK = st.sampled_from([["--bogus"], ["-x"], ["--"], ["word"], ["--help"]])


def _argv(flags: dict[str, st.SearchStrategy | None]) -> st.SearchStrategy[list[str]]:
    """Argument lists: a few of ``flags`` (flag -> its values, or ``SWITCH``), each at
    most once, as ``--flag value``, ``--flag=value`` or a bare ``--flag``; rarely junk."""
    def with_values(names: list[str]) -> st.SearchStrategy[list[str]]:
        parts = []
        for name in names:
            values = flags[name]
            if values is SWITCH:
                parts.append(st.just([name]))
            else:
                parts.append(st.one_of(values.map(lambda v, n=name: [n, v]),
                                       values.map(lambda v, n=name: [f"{n}={v}"]),
                                       st.just([name])))
        return st.tuples(*parts, st.one_of(st.just([]), st.just([]), st.just([]), st.just([]),
                                           JUNK))

    chosen = st.lists(st.sampled_from(sorted(flags)), unique=True, max_size=6)
    return chosen.flatmap(with_values).map(lambda parts: [a for p in parts for a in p])


def _outcome(main, argv: list[str], capsys, prog: str,
             codes: tuple[int, ...] = (cli.EXIT_OK, cli.EXIT_USAGE)) -> int:
    """``main(argv)``'s exit code; asserts it is 0, or one of ``codes`` with one line on
    stderr, in words (no object's repr from deep inside a library)."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a bad flag (2)
        code = exit_.code
    out, err = capsys.readouterr()
    event(f"exit {code}: {err.split(': ')[2][:24] if code else 'ok'}")
    assert code in codes, (argv, code, err)
    if code:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), (argv, err)
        assert not re.search(r"<bound method|<[\w.]+ object at 0x", err), err
    return code


def _values(*values: str) -> st.SearchStrategy[str]:
    """Some plausible values, some not, and any text: a real run stays tiny."""
    return st.one_of(st.sampled_from(values), ARGV_TEXT)


# Flags of a real run on 256 real digits: the values bounded so that a run that is
# accepted trains at most 2 epochs (an accepted 10**6 epochs would be a correct answer,
# and no test).
TRAIN_FLAGS = {
    "--preset": _choices("original", "relu_maxpool", "relu_avgpool_pad2_dropout"),
    "--dataset": _choices("mnist"), "--epochs": _values("1", "2", "0", "-1", "nan", "1e9"),
    "--batch-size": _values("64", "100", "0", "-5", "257", "100000", "nan"),
    "--lr": _values("1e-3", "0", "-1", "inf", "nan", "1e30", "3e-3"),
    "--weight-decay": _values("0", "0.01", "-1", "inf", "nan"),
    "--schedule": _choices("constant", "cosine"),
    "--warmup-epochs": _values("0", "0.5", "1", "2", "nan", "inf", "-1"),
    "--seed": _values("0", "7", "-1", "2147483647", "2147483648", "1e3"),
    "--val-size": _values("0", "100", "1500", "-1", "60000"),
    "--limit-train": _values("256", "300", "-5", "100000"),
    "--augment": SWITCH, "--no-augment": SWITCH, "--flip": SWITCH,
    "--devices": _values("0", "1", "2", "-1"), "--loop": _choices("scan", "step"),
    "--data-dir": PLACES, "--workdir": st.one_of(PLACES, ARGV_TEXT),
    "--name": st.one_of(PLACES, ARGV_TEXT, st.sampled_from(["best", ".x.lock", "n" * 250])),
    "--distributed": SWITCH, "--resume": SWITCH, "--overwrite": SWITCH,
}
TINY_RUN = ["--limit-train", "256", "--epochs", "1", "--val-size", "100", "--no-progress"]


def _budget(default: int, thorough: int) -> pytest.MarkDecorator:
    """Run a fuzzer with ``default`` examples, and with ``thorough`` under ``-m slow``."""
    return pytest.mark.parametrize(
        "examples", [default, pytest.param(thorough, marks=pytest.mark.slow)])


@pytest.mark.slow  # kept out of the 2-minute default suite (CI runs it)
@pytest.mark.mnist
@_budget(3, 60)
def test_train_flags_give_a_real_run_or_one_line(examples, mnist_sample, trained_original,
                                                 tmp_path, capsys, monkeypatch):
    """train.py with flag sets drawn over every flag, each a real run on real digits
    (the sample, as a data set of 256 training images, 1 epoch unless the flags say
    otherwise): success, or one line and its exit code; a run saved before is never
    changed unless --overwrite names it. Only --distributed's child process is not
    started (its supervisor is the processes' tests')."""
    import train
    from lenet_jax import data
    from lenet_jax.cli import distributed

    _enter_places(tmp_path, monkeypatch)
    monkeypatch.setattr(data, "load", lambda name, data_dir=None: mnist_sample)
    monkeypatch.setattr(distributed, "supervise", lambda argv: 0)
    shutil.copytree(trained_original, tmp_path / "kept", symlinks=True)  # a run saved before
    kept = tree_digest(tmp_path / "kept" / "original" / "checkpoints")

    @settings(SEEDED, max_examples=examples)
    @given(argv=_argv(TRAIN_FLAGS))
    def check(argv):
        _outcome(train.main, [*TINY_RUN, *argv], capsys, "train.py",
                 codes=(cli.EXIT_OK, cli.EXIT_USAGE, cli.EXIT_DIVERGED))
        assert (tmp_path / "a-file").read_text() == "not a directory"  # nothing deleted
        assert (tmp_path / "a-dir").is_dir()
        assert tree_digest(tmp_path / "kept" / "original" / "checkpoints") == kept

    check()


EVALUATE_FLAGS = {
    "--ckpt": st.one_of(PLACES, ARGV_TEXT), "--split": _choices("test", "train"),
    "--dataset": _choices("mnist"), "--data-dir": PLACES,
    "--batch-size": _values("1", "128", "0", "-1", "10000", "10001", "1000000000"),
    "--out": st.one_of(PLACES, ARGV_TEXT), "--normalise": SWITCH, "--json": SWITCH,
    "--image": st.one_of(PLACES, ARGV_TEXT, st.just("pictures")), "--explain": SWITCH,
    "--non-digits": SWITCH,
}


@pytest.mark.mnist
@_budget(4, 80)
def test_evaluate_flags_give_a_real_report_or_one_line(examples, trained_original,
                                                      mnist_sample, tmp_path, capsys,
                                                      monkeypatch):
    """evaluate.py with flag sets drawn over every flag, --ckpt often the real
    checkpoint, run for real (the data set is the real sample); success or one line,
    and the checkpoint never changes."""
    import evaluate
    from lenet_jax import data

    _enter_places(tmp_path, monkeypatch)
    (tmp_path / "pictures").mkdir(exist_ok=True)
    Image.fromarray(mnist_sample.test.images[0, ..., 0]).save(tmp_path / "pictures/7.png")
    monkeypatch.setattr(data, "load", lambda name, data_dir=None: mnist_sample)
    ckpt = shutil.copytree(trained_original, tmp_path / "run", symlinks=True) / "best"
    kept = tree_digest(tmp_path / "run" / "original" / "checkpoints")

    @settings(SEEDED, max_examples=examples)
    @given(argv=_argv(EVALUATE_FLAGS), real=st.booleans())
    def check(argv, real):
        _outcome(evaluate.main, [*(["--ckpt", str(ckpt)] if real else []), *argv], capsys,
                 "evaluate.py")
        assert tree_digest(tmp_path / "run" / "original" / "checkpoints") == kept

    check()


EXPORT_FLAGS = {"--ckpt": st.one_of(PLACES, ARGV_TEXT, st.just("run/best")),
                "--out": st.one_of(PLACES, ARGV_TEXT, st.just("run/best")),
                "--savedmodel": SWITCH}


@_budget(5, 100)
def test_export_flags_give_an_artefact_or_one_line(examples, trained_original, tmp_path,
                                                   capsys, monkeypatch):
    """The export command line, exporting for real; only the SavedModel (TensorFlow's
    conversion, seconds an example) is stood in for."""
    from lenet_jax import export
    from lenet_jax.cli import export as export_cli

    _enter_places(tmp_path, monkeypatch)
    shutil.copytree(trained_original, tmp_path / "run", symlinks=True)
    kept = tree_digest(tmp_path / "run" / "original" / "checkpoints")

    @settings(SEEDED, max_examples=examples)
    @given(argv=_argv(EXPORT_FLAGS))
    def check(argv):
        with mock.patch.object(export, "export_savedmodel", return_value=tmp_path / "sm"):
            _outcome(export_cli.main, argv, capsys, "lenet_jax.export")
        assert tree_digest(tmp_path / "run" / "original" / "checkpoints") == kept

    check()


def _read(picture: bytes) -> None:
    """The reader's contract: a 28x28 uint8 digit, or ImageError; nothing else."""
    try:
        digit = evaluation.mnist_like(picture)
    except evaluation.ImageError as err:
        assert str(err).startswith("the image: ") and "\n" not in str(err)
        return
    assert digit.shape == (28, 28, 1) and digit.dtype == np.uint8


@_budget(150, 3000)
def test_random_bytes_are_read_or_refused(examples):
    settings(SEEDED, max_examples=examples)(given(st.binary(max_size=4096))(_read))()


MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]


def _encode(mode: str, fmt: str, size: tuple[int, int], seed: int, frames: int) -> bytes | None:
    """A picture of ``mode`` and ``size`` with a dark stroke, as ``fmt`` would store it;
    None where that format cannot hold that mode."""
    rng = np.random.default_rng(seed)
    gray = np.full(size[::-1], 230, np.uint8)
    gray[:, size[0] // 3:size[0] // 3 + max(1, size[0] // 8)] = 20
    gray = np.clip(gray + rng.integers(-20, 20, gray.shape), 0, 255).astype(np.uint8)
    if mode == "I;16":  # 16 bits a pixel, as scanners and microscopes write
        picture = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        picture = Image.fromarray(gray).convert(mode)
    encoded = io.BytesIO()
    extra = {}
    if frames > 1 and fmt in ("GIF", "WEBP", "PNG", "TIFF"):
        extra = {"save_all": True, "append_images": [picture.rotate(90)] * (frames - 1)}
    try:
        picture.save(encoded, fmt, **extra)
    except (OSError, ValueError, KeyError):
        return None
    return encoded.getvalue()


@_budget(100, 1500)
def test_damaged_pictures_of_every_format_and_mode_are_read_or_refused(examples):
    settings(SEEDED, max_examples=examples)(given(
        mode=st.sampled_from(MODES), fmt=st.sampled_from(FORMATS),
        size=st.sampled_from([(1, 1), (1, 10000), (10000, 1), (40, 30), (300, 200)]),
        frames=st.sampled_from([1, 3]), seed=st.integers(0, 2**16),
        damage=st.sampled_from(["none", "truncate", "flip"]), where=st.floats(0, 1),
    )(_read_damaged))()


def _read_damaged(mode, fmt, size, frames, seed, damage, where):
    picture = _encode(mode, fmt, size, seed, frames)
    if picture is None:
        return
    cut = int(where * (len(picture) - 1))
    if damage == "truncate":
        picture = picture[:cut]
    elif damage == "flip":
        picture = picture[:cut] + bytes([picture[cut] ^ 0xFF]) + picture[cut + 1:]
    _read(picture)


def test_a_30000_by_30000_header_is_refused_before_decoding():
    with pytest.raises(evaluation.ImageError, match="900,000,000 pixels is over the budget"):
        evaluation.mnist_like(png_header_only(30000, 30000))


def test_an_exif_rotated_photo_reads_as_it_is_shown():
    """A phone stores the pixels sideways and says so in EXIF (orientation 6: rotate
    90° clockwise to show); the reader turns it upright first."""
    upright = np.full((120, 80), 235, np.uint8)
    upright[15:105, 20:32] = 15  # a tall bar left of centre: a "1" leaning nowhere
    upright[15:27, 20:70] = 15  # with a top bar: a "7"-like corner
    sideways = Image.fromarray(np.rot90(upright, 1))  # stored turned 90° anticlockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    encoded = io.BytesIO()
    sideways.save(encoded, "JPEG", exif=exif, quality=95)
    plain = io.BytesIO()
    Image.fromarray(upright).save(plain, "JPEG", quality=95)
    rotated, expected = (evaluation.mnist_like(b.getvalue()) for b in (encoded, plain))
    assert np.abs(rotated.astype(int) - expected.astype(int)).mean() < 3


def test_16_bit_and_transparent_pictures_read_as_their_8_bit_selves():
    """Pillow's own conversion of a 16-bit picture to 8 bits clips it to white (a blank
    page); the reader scales it. Transparency is background: white."""
    gray = np.full((60, 40), 235, np.uint8)
    gray[10:50, 15:22] = 15

    def png(picture: Image.Image) -> bytes:
        encoded = io.BytesIO()
        picture.save(encoded, "PNG")
        return encoded.getvalue()

    expected = evaluation.mnist_like(png(Image.fromarray(gray)))
    sixteen = evaluation.mnist_like(png(Image.fromarray(gray.astype(np.uint16) * 257)))
    ink = Image.fromarray(np.where(gray < 128, 255, 0).astype(np.uint8))
    see_through = Image.merge("LA", [Image.new("L", ink.size, 0), ink])  # black ink, clear
    np.testing.assert_array_equal(sixteen, expected)
    np.testing.assert_array_equal(evaluation.mnist_like(png(see_through)) > 127, expected > 127)


DAMAGE = st.sampled_from(["truncate", "delete", "flip", "directory", "empty"])


@pytest.mark.slow
@settings(SEEDED, max_examples=60)
@given(damage=DAMAGE, which=st.integers(0, 10**6), where=st.floats(0, 1))
def test_damaged_checkpoints_are_one_line_and_left_as_they_were(
        damage, which, where, trained_original, tmp_path_factory, capsys):
    """A run killed in epoch 2 (its steps 2 and 3 gone), then random damage to one file of step
    1: evaluate.py, export and --resume each answer or refuse in one line (exit 2), and
    leave every byte of the run directory as it was."""
    import evaluate
    import train
    from lenet_jax import training
    from lenet_jax.cli import export

    workdir = tmp_path_factory.mktemp("damaged")
    shutil.copytree(trained_original, workdir / "runs", symlinks=True)
    run_dir = workdir / "runs" / "original"
    for step in ("2", "3"):
        shutil.rmtree(run_dir / "checkpoints" / step)
    files = sorted(p for p in (run_dir / "checkpoints" / "1").rglob("*") if p.is_file())
    victim = files[which % len(files)]
    _damage(victim, damage, where)
    before = tree_digest(run_dir)
    picture = workdir / "one.png"
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(picture)

    event(f"damage {damage} to {victim.relative_to(run_dir / 'checkpoints' / '1')}")
    _outcome(evaluate.main, ["--ckpt", str(run_dir), "--image", str(picture)], capsys,
             "evaluate.py")
    _outcome(export.main, ["--ckpt", str(run_dir), "--out", str(workdir / "model")], capsys,
             "lenet_jax.export")
    with mock.patch.object(training, "compile_epoch", side_effect=_Restored):
        try:
            _outcome(train.main, trained_flags("--workdir", str(workdir / "runs"), "--name",
                                               "original", "--resume", "--no-progress"),
                     capsys, "train.py")
        except _Restored:
            capsys.readouterr()
            event("resume: restored, would train")
    assert tree_digest(run_dir) == before, victim


class _Restored(BaseException):  # noqa: N818 (a BaseException: it passes cli.guarded)
    """Raised where resuming has restored everything and would start to train."""


def _damage(victim: Path, damage: str, where: float) -> None:
    data = victim.read_bytes()
    cut = int(where * max(len(data) - 1, 0))
    if damage == "truncate":
        victim.write_bytes(data[:cut])
    elif damage == "delete":
        victim.unlink()
    elif damage == "flip" and data:
        victim.write_bytes(data[:cut] + bytes([data[cut] ^ 0xFF]) + data[cut + 1:])
    elif damage == "directory":
        victim.unlink()
        victim.mkdir()
    else:
        victim.write_bytes(b"")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=8)


@_budget(4, 150)
def test_metadata_edited_at_random_is_read_or_refused_in_one_line(
        examples, trained_original, tmp_path, capsys):
    """One key of a real checkpoint's metadata deleted, renamed or given any JSON value:
    evaluate.py (a picture, so the edit is read, not the data) answers or refuses in one
    line, and so does --resume, which never starts on it; no traceback, no exit 70."""
    import json as json_module

    import evaluate
    import train
    from lenet_jax import training

    picture = tmp_path / "one.png"
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(picture)
    original = trained_original / "original" / "checkpoints" / "3" / "metadata" / "metadata"
    keys = sorted(json_module.loads(original.read_text()))

    @settings(SEEDED, max_examples=examples)
    @given(key=st.sampled_from(keys), edit=st.sampled_from(["delete", "rename", "value"]),
           value=JSON_VALUES)
    def check(key, edit, value):
        workdir = Path(tempfile.mkdtemp(dir=tmp_path))
        shutil.copytree(trained_original, workdir / "runs", symlinks=True)
        file = workdir / "runs/original/checkpoints/3/metadata/metadata"
        metadata = json_module.loads(file.read_text())
        edited = metadata.pop(key)
        if edit == "rename":
            metadata[key + "_x"] = edited
        elif edit == "value":
            metadata[key] = value
        file.write_text(json_module.dumps(metadata))
        event(f"{edit} {key}")
        _outcome(evaluate.main, ["--ckpt", str(workdir / "runs/original"), "--image",
                                 str(picture)], capsys, "evaluate.py")
        with mock.patch.object(training, "compile_epoch", side_effect=_Restored):
            try:
                _outcome(train.main, trained_flags("--workdir", str(workdir / "runs"),
                                                   "--name", "original", "--resume",
                                                   "--epochs", "4", "--no-progress"),
                         capsys, "train.py")
            except _Restored:
                capsys.readouterr()
        shutil.rmtree(workdir)

    check()


@_budget(10, 100)
def test_an_array_cache_damaged_at_random_is_rebuilt(examples, fake_tfds, tmp_path,
                                                     monkeypatch, capsys):
    """The array cache cut, flipped, grown, emptied or replaced by a directory at a random
    place: the next load gives the data set TFDS holds and leaves a sound cache."""
    from lenet_jax import data

    data_dir, _ = fake_tfds
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path / "cache"))
    truth = data.load("mnist", data_dir, verify=False)
    cache = data.array_cache_path("mnist", data_dir)
    sound = cache.read_bytes()

    @settings(SEEDED, max_examples=examples)
    @given(damage=st.sampled_from(["truncate", "flip", "grow", "empty", "directory"]),
           where=st.floats(0, 1), byte=st.integers(1, 255))
    def check(damage, where, byte):
        cut = int(where * (len(sound) - 1))
        if damage == "directory":
            cache.unlink()
            cache.mkdir()
        else:
            cache.write_bytes({"truncate": sound[:cut],
                               "flip": sound[:cut] + bytes([sound[cut] ^ byte]) + sound[cut + 1:],
                               "grow": sound[:cut] + bytes([byte]) * 64 + sound[cut:],
                               "empty": b""}[damage])
        loaded = data.load("mnist", data_dir, verify=False)
        capsys.readouterr()
        np.testing.assert_array_equal(loaded.train.images, truth.train.images)
        np.testing.assert_array_equal(loaded.test.labels, truth.test.labels)
        if cache.is_dir():  # a directory in its place is not deleted: a note, no cache
            cache.rmdir()
        cache.write_bytes(sound)

    check()


HTTP_METHODS = st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS", "DELETE", "BREW",
                                "get", "POST /predict", ""])
HTTP_PATHS = st.sampled_from(["/", "/predict", "/index.html", "/x", "//", "*", "/predict?x=1",
                              "http://evil.example/", ""])


@st.composite
def _http_request(draw, host: str, picture: bytes) -> bytes:
    """A raw request: a method, a path, headers of every kind, some wrong, and a body."""
    body = draw(st.one_of(st.just(picture), st.binary(max_size=300),
                          st.just(picture[:len(picture) // 2]), st.just(b"")))
    length = draw(st.one_of(st.just(str(len(body))), st.sampled_from(
        ["-1", "0", "99999999999999999999", "x", "", str(len(body) + 5), "1048577"])))
    headers = {
        "Host": draw(st.sampled_from([host, "evil.example", "", host.upper(), f"{host}:1"])),
        "Content-Length": length,
        "Content-Type": draw(st.sampled_from(["image/png", "image/jpeg", "text/plain",
                                              "application/octet-stream", "", "image/png; x"])),
        "Origin": draw(st.sampled_from([None, f"http://{host}", "http://evil.example",
                                        "null"])),
        "Transfer-Encoding": draw(st.sampled_from([None, None, "chunked"])),
    }
    lines = [f"{draw(HTTP_METHODS)} {draw(HTTP_PATHS)} "
             f"{draw(st.sampled_from(['HTTP/1.1', 'HTTP/1.0', 'HTTP/9', '']))}"]
    lines += [f"{name}: {value}" for name, value in headers.items()
              if value is not None and draw(st.booleans() | st.just(True))]
    junk = draw(st.sampled_from(["", "X: " + "a" * 70000 + "\r\n", "no colon here\r\n"]))
    return ("\r\n".join(lines) + "\r\n" + junk + "\r\n").encode("latin-1") + body


@_budget(40, 400)
def test_raw_http_requests_get_an_answer_or_a_closed_connection(examples, trained_original):
    """Requests drawn over methods, paths, versions, Host, Origin, Content-Type and
    -Length, and bodies (pictures, cut pictures, bytes) against the real server: each
    is answered with a status line and, for an error, a JSON body, or the connection
    is closed; the server answers a good request after each."""
    import http.client
    import socket as socket_module

    from lenet_jax import serve

    predictor = evaluation.Predictor.load(trained_original / "best")
    server = serve.make_server(predictor, "127.0.0.1", 0, timeout=0.5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{server.server_address[1]}"
    picture = io.BytesIO()
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(picture, "PNG")

    def exchange(raw: bytes) -> bytes:
        with socket_module.create_connection(server.server_address[:2], timeout=10) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(raw)
            reply = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(1 << 16):
                    reply += chunk
            return reply

    @settings(SEEDED, max_examples=examples)
    @given(raw=_http_request(host, picture.getvalue()))
    def check(raw):
        reply = exchange(raw)
        if reply:
            head, _, body = reply.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            event(f"status {status}")
            assert status in (200, 400, 403, 404, 405, 408, 411, 413, 414, 415, 431, 503), head
            if status >= 400 and body:  # an error closes the connection: its body is last
                assert json.loads(body)["status"] == status
        else:
            event("closed")
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        connection.request("POST", "/predict", picture.getvalue(),
                           {"Content-Type": "image/png"})
        assert connection.getresponse().status == 200
        connection.close()

    try:
        check()
    finally:
        server.shutdown()
        server.server_close()
