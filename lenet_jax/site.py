"""The draw-a-digit page as a folder that needs no server (``lenet-jax site``): the page
of ``lenet_jax.serve``, its model as ONNX run in the browser by ONNX Runtime Web, and the
image reader ported to JavaScript (``static/ink.js``, pixel for pixel ``ink.mnist_digit``),
so that any static host, or ``python -m http.server``, serves the same answers.

    DIR/index.html      the served page, answering in the browser (static/local.js)
    DIR/model.onnx      to_onnx.model_proto with the maps the page draws as outputs
    DIR/model.json      the card, class names, the "not a digit" rule, the RBF codes
    DIR/ink.js, local.js
    DIR/ort/            onnxruntime-web's WebAssembly build, from npm at build time

npm is needed once, to fetch onnxruntime-web into a cache; the folder then works offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

from lenet_jax import data, models
from lenet_jax.errors import UserError

ORT_PACKAGE, ORT_VERSION = "onnxruntime-web", "1.31.1"
ORT_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")
# an ONNX IR version it reads (up to 13; the onnx package writes 14; opset 17 needs 8+)
IR_VERSION = 10
GENERATOR = "lenet-jax site"  # model.json's mark: a folder this command may write again
SCRIPTS = ("ink.js", "local.js")
# index.html's place for the scripts that answer in the page instead of asking a server
HOOK = "<!-- the static page's scripts -->"


class SiteError(UserError):
    """The folder cannot be written, or onnxruntime-web cannot be fetched."""


def runtime_files(cache: Path | None = None) -> Path:
    """The directory holding ``ORT_FILES``; npm installs ``ORT_PACKAGE``@``ORT_VERSION``
    into the cache the first time."""
    home = (cache or data.default_cache_dir()) / f"{ORT_PACKAGE}-{ORT_VERSION}"
    dist = home / "node_modules" / ORT_PACKAGE / "dist"
    if all((dist / name).is_file() for name in ORT_FILES):
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise SiteError(f"npm is needed once, to fetch {ORT_PACKAGE} {ORT_VERSION} "
                        "(apt-get install npm, or Node.js from nodejs.org)")
    try:
        home.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(home), "--no-audit", "--no-fund",
                               "--ignore-scripts", f"{ORT_PACKAGE}@{ORT_VERSION}"],
                              capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SiteError(f"npm could not fetch {ORT_PACKAGE} {ORT_VERSION}: {err}") from None
    if done.returncode != 0 or not all((dist / name).is_file() for name in ORT_FILES):
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SiteError(f"npm could not fetch {ORT_PACKAGE} {ORT_VERSION} into {home}: {why}")
    return dist


def model_json(predictor: Any) -> dict:
    """What the page needs besides the network: the card ``GET /model`` serves, the
    class names, the rule (``Rule.to_json``) and, for an RBF head, its codes."""
    from lenet_jax import rejection, serve

    rbf = predictor.module.preset.head == "rbf"
    return {"generator": GENERATOR, "card": serve.model_card(predictor),
            "class_names": list(predictor.class_names),
            "rule": predictor.rule.to_json() if predictor.rule is not None else None,
            "statistic_layers": list(rejection.STATISTIC_LAYERS),
            "rbf_codes": models.rbf_codes().tolist() if rbf else None}


def build(predictor: Any, out: str | os.PathLike, runtime: Path | None = None) -> list[Path]:
    """Write the folder for ``predictor`` (an ``evaluation.Predictor``) at ``out``, whole
    or not at all: a folder an earlier build wrote is replaced, any other that is not
    empty is refused (``SiteError``). Returns the files written."""
    import onnx

    from lenet_jax import to_onnx

    out = Path(out)
    if out.exists() and not _rewritable(out):
        raise SiteError(f"{out} is not an empty directory nor one 'lenet-jax site' wrote; "
                        "choose another directory")
    dist = runtime or runtime_files()
    static = resources.files("lenet_jax").joinpath("static")
    staging = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        page = static.joinpath("index.html").read_text()
        tags = "\n".join(f'<script src="{name}"></script>' for name in SCRIPTS)
        (staging / "index.html").write_text(page.replace(HOOK, tags))
        for name in SCRIPTS:
            (staging / name).write_text(static.joinpath(name).read_text())
        (staging / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copyfile(dist / name, staging / "ort" / name)
        model = to_onnx.model_proto(predictor.metadata["preset"], predictor.params,
                                    predictor.class_names, maps=True)
        model.ir_version = min(model.ir_version, IR_VERSION)
        onnx.save(model, staging / "model.onnx")
        (staging / "model.json").write_text(json.dumps(model_json(predictor)))
        _swap(staging, out)
    except OSError as err:
        raise SiteError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(path for path in out.rglob("*") if path.is_file())


def _rewritable(out: Path) -> bool:
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    try:
        return json.loads((out / "model.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _swap(staging: Path, out: Path) -> None:
    """``staging`` becomes ``out``; an old ``out`` goes only once the new one is there."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        if old.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
