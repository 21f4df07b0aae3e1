"""``python -m lenet_jax.serve``'s command line: flags, the checkpoint, the port, and how
it stops (exit codes: 0 stopped, 2 bad input, 130 interrupted, 143 terminated)."""

from __future__ import annotations

import argparse

from lenet_jax import cli
from lenet_jax.serve import TIMEOUT_SECONDS, make_server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="lenet_jax.serve",
                                description="Serve a draw-a-digit page for a checkpoint.")
    cli.add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, metavar="SECONDS",
                        help="close a connection that sends nothing for this long "
                             f"(default {TIMEOUT_SECONDS:g})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cli.tolerant_console()
    args = parse_args(argv)
    return cli.guarded("lenet_jax.serve", lambda: serve(args))


def serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be in [0, 65535], got {args.port}")
    if not 0.1 <= args.timeout <= 3600:  # NaN fails too
        return _fail(f"--timeout must be in [0.1, 3600] seconds, got {args.timeout}")
    from lenet_jax import runtime

    runtime.enable_compilation_cache()
    cli.quiet_libraries()
    predictor = cli.load_predictor(args)
    try:
        server = make_server(predictor, args.host, args.port, args.timeout)
    except OSError as err:
        return _fail(f"cannot listen on {args.host}:{args.port}: {err.strerror}")
    host, port = server.server_address[:2]
    print(f"serving {predictor.metadata['preset']} (epoch {predictor.metadata['epoch']}) on "
          f"http://{host}:{port}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt as stop:
        return cli.stopped(stop)[1]
    finally:
        server.server_close()
        server.drain()
    return 0


def _fail(message: str) -> int:
    return cli.fail("lenet_jax.serve", message)


