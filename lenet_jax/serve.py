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

import contextlib
import json
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import numpy as np

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a drawn 280x280 PNG is ~10 KB
DISCARD_LIMIT = 64 << 20  # a larger refused body is not read: the connection just closes
PICTURE_TYPES = ("image/png", "image/jpeg", "application/octet-stream")
TIMEOUT_SECONDS = 10  # a connection that sends nothing for this long is closed
MAX_CONNECTIONS = 64  # open at once; the ulimit's 1,024 files are never reached
MAX_IN_FLIGHT = 16  # pictures being read at once; more are answered 503
DECODING = 2  # decoded at once (each up to evaluation.DECODED_BYTE_BUDGET): the memory bound


def prediction(predictor: Any, picture: bytes,
               decoding: threading.Semaphore | None = None) -> dict:
    """The endpoint's answer for one encoded picture: top 3, "rejected", and the
    arrays of ``explain.panels`` (input, each map layer as maps x H x W, F6, outputs);
    ``ImageError`` when the picture cannot be read. ``decoding`` is held while the
    picture is decoded."""
    from lenet_jax import evaluation, explain

    with decoding or contextlib.nullcontext():
        image = evaluation.mnist_like(picture)
    answer = predictor.answer(image[None])[0]
    drawn = explain.panels(predictor.module, predictor.params, image)
    maps = {layer: _rounded(np.moveaxis(drawn[layer], -1, 0)) for layer in explain.MAP_LAYERS}
    code = next((name for name in drawn if name.startswith("closest RBF code")), None)
    return answer.to_json() | {
        "text": str(answer),
        "input": _rounded(drawn["input"]),
        "maps": maps,
        "F6": _rounded(drawn["F6"]),
        # original: the RBF code F6 lies closest to, (class, 12 x 7 bitmap)
        "code": ({"class": predictor.class_names[int(code.rpartition(" ")[2])],
                  "bitmap": _rounded(drawn[code])} if code else None),
        "probabilities": _rounded(drawn["probabilities"]),
        "class_names": list(predictor.class_names),
    }


def reading_answer(reader: Any, picture: bytes,
                   decoding: threading.Semaphore | None = None) -> dict:
    """``POST /read``'s answer for one encoded picture of a written number: the number,
    each digit's x in the picture's pixels, column and confidence, and the sweep's
    answers (columns x 11, the blank last) with where column 0 looks and the step
    between columns, in the picture's pixels; ``ImageError`` when it cannot be read."""
    from lenet_jax import evaluation, models, strips

    with decoding or contextlib.nullcontext():
        strip = evaluation.number_strip(picture)
    number = reader.read([strip])[0]
    return number.to_json() | {
        "text": str(number),
        "answers": _rounded(number.probabilities),
        "first_x": strip.picture_x(strips.FIELD / 2),
        "step_x": models.SWEEP_STEP / strip.scale,
    }


def model_card(predictor: Any) -> dict:
    """``GET /model``: which checkpoint answers, and a line per layer on what it is;
    ``reads_numbers`` when it was trained on the numbers task (``POST /read``)."""
    from lenet_jax import models

    metadata = predictor.metadata
    numbers = metadata.get("task") == "numbers"
    return {"checkpoint": predictor.source, "preset": metadata["preset"],
            "dataset": metadata["dataset"], "epoch": metadata["epoch"],
            "test_accuracy": metadata.get("metrics", {}).get(
                "test_digit_accuracy" if numbers else "test_accuracy"),
            "numbers_read": metadata["metrics"]["test_accuracy"] if numbers else None,
            "rejection": predictor.rule is not None, "reads_numbers": numbers,
            "layers": models.layer_lines(metadata["preset"])}


def _rounded(array: np.ndarray) -> list:
    return np.round(np.asarray(array, np.float64), 4).tolist()


class Handler(BaseHTTPRequestHandler):
    """``GET /`` the page, ``GET /model`` what answers, ``POST /predict`` the answer
    (``POST /read`` a number's, from a numbers checkpoint); anything else, malformed
    requests included, a JSON error. Only requests addressed to this server (its
    ``Host``) from its own page or from no page (``Origin``) are served."""

    predictor: Any = None  # set by ``make_server``
    reader: Any = None  # a reading.NumberReader, when the checkpoint reads numbers
    page: bytes = b""
    hosts: frozenset[str] = frozenset()  # the Host values this server answers to
    server_version = "lenet-jax"
    protocol_version = "HTTP/1.1"  # keep-alive: the page posts a picture per stroke
    timeout = TIMEOUT_SECONDS  # a connection silent this long is closed

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        host = self.headers.get("Host", "")
        if host.lower() not in self.hosts:
            self._error(HTTPStatus.FORBIDDEN, "this server answers only to requests for "
                        f"its own address, not Host {host!r}")
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{host.lower()}":
            self._error(HTTPStatus.FORBIDDEN, f"requests from another site ({origin}) "
                        "are refused")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.page, "text/html; charset=utf-8")
        elif self.path == "/model":
            self._send(HTTPStatus.OK, json.dumps(model_card(self.predictor)).encode(),
                       "application/json")
        elif self.path in ("/predict", "/read"):
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST with a PNG body")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such path: {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        from lenet_jax.evaluation import ImageError

        if self.path not in ("/predict", "/read"):
            self._error(HTTPStatus.NOT_FOUND, f"no such path: {self.path}")
            return
        if self.path == "/read" and self.reader is None:
            self._error(HTTPStatus.NOT_FOUND, "this checkpoint reads one digit, not numbers:"
                        " /read needs one trained on the numbers task")
            return
        kind = self.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if kind and kind not in PICTURE_TYPES:
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                        f"send the picture as {' or '.join(PICTURE_TYPES)}, not {kind}")
            return
        body = self._body()
        if body is None:
            return
        if not self.server.in_flight.acquire(blocking=False):
            self._error(HTTPStatus.SERVICE_UNAVAILABLE,
                        f"busy: {MAX_IN_FLIGHT} pictures are being read; try again")
            return
        try:
            answer = (reading_answer(self.reader, body, self.server.decoding)
                      if self.path == "/read"
                      else prediction(self.predictor, body, self.server.decoding))
        except ImageError as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
            return
        except Exception as err:  # a bug: say so in one line and keep serving
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}")
            return
        finally:
            self.server.in_flight.release()
        self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")

    def _body(self) -> bytes | None:
        """The request's body, or None once an error has been sent."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length < 0 or "Transfer-Encoding" in self.headers:
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the picture with a Content-Length")
            return None
        if length > MAX_BODY_BYTES:
            self._discard(length)
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the picture is {length} bytes; the limit is {MAX_BODY_BYTES}")
            return None
        body = self.rfile.read(length)  # each wait for bytes ends at ``timeout``
        if len(body) < length:  # the client closed early
            self.close_connection = True
            return None
        return body

    def _discard(self, length: int) -> None:
        """Read and drop a refused body of up to ``DISCARD_LIMIT`` bytes, so that the
        client, still sending, reads the 413 instead of a broken pipe; a larger one, or
        one that stops coming, is not waited for."""
        left = length if length <= DISCARD_LIMIT else 0
        with contextlib.suppress(TimeoutError):
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not supported here")

    do_HEAD = do_OPTIONS = do_PUT = do_DELETE = do_PATCH = do_TRACE = do_CONNECT = (  # noqa: N815
        _not_allowed)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line or header, a method it
        does not know) as JSON too."""
        if code == HTTPStatus.NOT_IMPLEMENTED:  # a method no handler above names
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, "use GET / or POST /predict"
        self._error(HTTPStatus(code), message or HTTPStatus(code).phrase)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self.close_connection = True  # what is left of the request is not read
        body = json.dumps({"error": message, "status": int(status)}).encode()
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        if self.request_version == "HTTP/0.9":  # a request line without a version: answer
            self.request_version = "HTTP/1.0"  # with a status line all the same, not bare
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, POST")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: errors reach the client as JSON


class LocalServer(ThreadingHTTPServer):
    """A thread per connection, at most ``MAX_CONNECTIONS`` of them (more are answered
    503 at once and closed); a client gone mid-answer is no error; at most
    ``MAX_IN_FLIGHT`` pictures read at once, and ``DECODING`` of them decoded."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # connections waiting for accept (socketserver's default: 5)

    def __init__(self, address: tuple[str, int], handler: type[Handler]):
        super().__init__(address, handler)
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self.decoding = threading.BoundedSemaphore(DECODING)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(1)
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        # An Exception: no thread started, so the slot is ours to free. A signal that stops
        # the server can land after the thread started (no Exception): the thread frees it.
        try:
            super().process_request(request, client_address)
        except Exception:
            self.connections.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def drain(self, timeout: float = 30) -> None:
        """Wait until no picture is being read (new ones get 503 meanwhile), so that the
        process never exits with a thread inside XLA, which aborts it."""
        deadline = time.monotonic() + timeout
        for _ in range(MAX_IN_FLIGHT):
            if not self.in_flight.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # a client that went away, or stayed silent
            return
        print(f"lenet_jax.serve: a request from {client_address[0]} failed: "
              f"{type(error).__name__}: {error}", file=sys.stderr)


BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: 60\r\n\r\n"
        + json.dumps({"error": "busy: too many connections", "status": 503}).encode()
        .ljust(60))


def make_server(predictor: Any, host: str, port: int,
                timeout: float = TIMEOUT_SECONDS) -> LocalServer:
    """A server for ``predictor`` bound to (host, port), its first answer compiled;
    a connection silent for ``timeout`` seconds is closed."""
    from lenet_jax import reading

    page = resources.files("lenet_jax").joinpath("static/index.html").read_bytes()
    reader = (reading.NumberReader.of(predictor.params, predictor.metadata, predictor.source)
              if predictor.metadata.get("task") == "numbers" else None)
    handler = type("BoundHandler", (Handler,), {"predictor": predictor, "reader": reader,
                                                "page": page, "timeout": timeout})
    server = LocalServer((host, port), handler)
    handler.hosts = _hosts(host, server.server_address[1])
    prediction(predictor, _warm_up_picture())  # compile now, not on the first stroke
    if reader is not None:
        reading_answer(reader, _warm_up_picture())
    return server


def _hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` values of requests meant for this server: its address, and for a
    loopback one ``localhost`` (a name another site cannot rebind to it)."""
    names = {host.lower(), f"[{host}]" if ":" in host else host}
    if host in ("127.0.0.1", "::1", "localhost"):
        names |= {"localhost", "127.0.0.1", "[::1]"}
    if host in ("", "0.0.0.0", "::"):  # every address of this machine: its IP literals
        names = {"localhost", "127.0.0.1", "[::1]", *_own_addresses()}
    return frozenset(f"{name}:{port}" for name in names if name)


def _own_addresses() -> set[str]:
    with contextlib.suppress(OSError):
        return {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    return set()


def _warm_up_picture() -> bytes:
    import io

    from PIL import Image

    canvas = np.zeros((28, 28), np.uint8)
    canvas[4:24, 12:16] = 255
    encoded = io.BytesIO()
    Image.fromarray(canvas).save(encoded, "PNG")
    return encoded.getvalue()


if __name__ == "__main__":  # the command line lives with the others
    from lenet_jax import cli
    from lenet_jax.cli.serve import main

    cli.run(main)
