"""Draw a digit, watch LeNet-5 read it: ``python -m lenet_jax.serve --ckpt runs/best``
(its command line: ``lenet_jax.cli.serve``).

A local page (``/``) with a canvas, the top 3 and every feature map, and one JSON
endpoint, ``POST /predict``, whose body is a PNG (or JPEG) picture of a digit. It answers
with the same reader, predictor and "not a digit" rule as ``evaluate.py --image``, plus
the maps of ``lenet_jax.explain``. Standard library only (``http.server``).

Exit codes (``lenet_jax.cli``): 0 stopped, 2 bad input (flags, checkpoint, a port in
use), 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import numpy as np

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a drawn 280x280 PNG is ~10 KB
DISCARD_LIMIT = 64 << 20  # a larger refused body is not read: the connection just closes


def prediction(predictor: Any, picture: bytes) -> dict:
    """The endpoint's answer for one encoded picture: top 3, "rejected", and the
    arrays of ``explain.panels`` (input, each map layer as maps x H x W, F6, outputs);
    ``ImageError`` when the picture cannot be read."""
    from lenet_jax import evaluation, explain

    image = evaluation.mnist_like(picture)
    answer = predictor.answer(image[None])[0]
    drawn = explain.panels(predictor.module, predictor.params, image)
    maps = {layer: _rounded(np.moveaxis(drawn[layer], -1, 0)) for layer in explain.MAP_LAYERS}
    return answer.to_json() | {
        "text": str(answer),
        "input": _rounded(drawn["input"]),
        "maps": maps,
        "F6": _rounded(drawn["F6"]),
        "probabilities": _rounded(drawn["probabilities"]),
        "class_names": list(predictor.class_names),
    }


def _rounded(array: np.ndarray) -> list:
    return np.round(np.asarray(array, np.float64), 4).tolist()


class Handler(BaseHTTPRequestHandler):
    """``GET /`` the page, ``POST /predict`` the answer; anything else a 4xx JSON error."""

    predictor: Any = None  # set by ``make_server``
    page: bytes = b""
    server_version = "lenet-jax"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.page, "text/html; charset=utf-8")
        elif self.path == "/predict":
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST with a PNG body")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such path: {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        from lenet_jax.evaluation import ImageError

        if self.path != "/predict":
            self._error(HTTPStatus.NOT_FOUND, f"no such path: {self.path}")
            return
        body = self._body()
        if body is None:
            return
        try:
            answer = prediction(self.predictor, body)
        except ImageError as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
            return
        except Exception as err:  # a bug: say so in one line and keep serving
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}")
            return
        self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")

    def _body(self) -> bytes | None:
        """The request's body, or None once a 411/413 has been sent."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length < 0:
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the picture with a Content-Length")
            return None
        if length > MAX_BODY_BYTES:
            self._discard(length)
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the picture is {length} bytes; the limit is {MAX_BODY_BYTES}")
            return None
        return self.rfile.read(length)

    def _discard(self, length: int) -> None:
        """Read and drop up to ``DISCARD_LIMIT`` bytes of a refused body, so that the
        client, still sending, reads the 413 instead of a broken pipe."""
        left = min(length, DISCARD_LIMIT)
        while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
            left -= len(chunk)

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not supported here")

    do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

    def _error(self, status: HTTPStatus, message: str) -> None:
        body = json.dumps({"error": message, "status": int(status)}).encode()
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, POST")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: errors reach the client as JSON


def make_server(predictor: Any, host: str, port: int) -> ThreadingHTTPServer:
    """A server for ``predictor`` bound to (host, port), its first answer compiled."""
    page = resources.files("lenet_jax").joinpath("static/index.html").read_bytes()
    handler = type("BoundHandler", (Handler,), {"predictor": predictor, "page": page})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    prediction(predictor, _warm_up_picture())  # compile now, not on the first stroke
    return server


def _warm_up_picture() -> bytes:
    import io

    from PIL import Image

    canvas = np.zeros((28, 28), np.uint8)
    canvas[4:24, 12:16] = 255
    encoded = io.BytesIO()
    Image.fromarray(canvas).save(encoded, "PNG")
    return encoded.getvalue()


if __name__ == "__main__":  # the command line lives with the others
    from lenet_jax.cli.serve import main

    sys.exit(main())
