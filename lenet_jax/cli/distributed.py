"""Several processes, one training run: ``train.py --distributed``.

Each process runs the same command with its own ``--process-id``; ``jax.distributed``
joins them, and the mesh of ``training.make_mesh`` then spans every device of every
process. Without the three flags JAX detects the cluster (SLURM, Kubernetes, TPU pods).
On CPU the processes reduce gradients through gloo.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

from lenet_jax import cli

# Seconds to wait for process 0 (LENET_JAX_JOIN_TIMEOUT changes it), and for a silent
# process to count as gone.
JOIN_TIMEOUT = int(os.environ.get("LENET_JAX_JOIN_TIMEOUT", "60"))
HEARTBEAT_TIMEOUT = 30
# Set in the child that ``supervise`` starts: the file that takes the child's C++ output.
CHILD_LOG = "LENET_JAX_DISTRIBUTED_LOG"


def problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the distributed flags, or None."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    given = [value is not None for value in explicit]
    if any(given) and not args.distributed:
        return "--coordinator, --num-processes and --process-id go with --distributed"
    if any(given) and not all(given):
        return "give --coordinator, --num-processes and --process-id together (or none)"
    if not all(given):
        return None
    host, _, port = args.coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"--coordinator must be HOST:PORT, got {args.coordinator!r}"
    if args.num_processes < 1:
        return f"--num-processes must be positive, got {args.num_processes}"
    if not 0 <= args.process_id < args.num_processes:
        return (f"--process-id must be in [0, {args.num_processes}), got {args.process_id}")
    return None


def start(args: argparse.Namespace) -> str | None:
    """Join the other processes; a problem to report in one line, or None. JAX aborts
    the process (a C++ check failure) when the coordinator cannot be reached, so that is
    checked here first, within ``JOIN_TIMEOUT``."""
    import jax

    if CHILD_LOG in os.environ:
        _keep_cpp_output_off_the_terminal()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.coordinator and (problem := _coordinator_problem(args)):
        return problem
    try:
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes,
            process_id=args.process_id, initialization_timeout=JOIN_TIMEOUT,
            heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
    except (ValueError, RuntimeError) as err:
        hint = ("" if args.coordinator else " (without --coordinator, --num-processes and "
                "--process-id, JAX reads them from a SLURM, Kubernetes or TPU-pod job)")
        return f"--distributed: {str(err).splitlines()[0]}{hint}"
    return None


def supervise(command: list[str]) -> int:
    """Run ``command`` (``lenet-jax train --distributed ...``) as a child, and end in one line
    when JAX's distributed service aborts it because another process is gone: the
    service's default is a C++ abort with a stack trace, and JAX gives Python no say."""
    log = Path(tempfile.gettempdir()) / f"lenet-jax-distributed-{os.getpid()}.log"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child, which reports it
    # The child imports this package as its parent did, installed or from a checkout.
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    child = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=path,
                                               **{CHILD_LOG: str(log)}),
                             preexec_fn=_die_with_parent)
    signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum))
    code = child.wait()
    if code == -signal.SIGABRT:  # how the service ends a process
        return cli.fail("train.py", _LOST.format(
            f"JAX's distributed service ended this one; its report: {log}"), cli.EXIT_PEER_LOST)
    if code < 0 and -code not in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        return cli.fail("train.py", f"the training process died of {signal.Signals(-code).name}"
                        f"; its C++ output: {log}", 128 - code)
    log.unlink(missing_ok=True)  # the child reported anything else itself
    return code if code >= 0 else 128 - code


_LOST = ("another process of this run stopped ({}); the saved epochs are kept: start "
         "every process again with --resume")


def peer_lost(detail: str) -> NoReturn:
    """End this process in one line because a collective failed: another process of the
    run is gone. ``os._exit``: JAX's exit handler would wait for the lost process at a
    shutdown barrier, then abort."""
    sys.stdout.flush()
    cli.fail("train.py", _LOST.format(detail.splitlines()[0]), cli.EXIT_PEER_LOST)
    sys.stderr.flush()
    os._exit(cli.EXIT_PEER_LOST)


def _die_with_parent() -> None:
    """In the child: be killed when the supervising process dies (Linux's prctl)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _keep_cpp_output_off_the_terminal() -> None:
    """In the child: the C++ libraries' output (gloo's joins, the coordination
    service's logs and abort) goes to the ``CHILD_LOG`` file; Python's stays."""
    log = os.open(os.environ[CHILD_LOG], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        stream.flush()
        terminal = os.dup(stream.fileno())
        os.dup2(log, stream.fileno())
        # Python's stream for the rest of the process: nothing to close it.
        setattr(sys, name, open(terminal, "w", buffering=1, errors="backslashreplace"))  # noqa: SIM115
    os.close(log)


def writes_the_run() -> bool:
    """Whether this process writes the run directory: metrics, plots, TensorBoard, links
    and the lock (Orbax coordinates the checkpoint itself). Process 0 of several."""
    import jax

    return jax.process_index() == 0


def _coordinator_problem(args: argparse.Namespace) -> str | None:
    """Process 0 must be able to listen on the coordinator's port; the others must reach
    it within ``JOIN_TIMEOUT`` seconds."""
    host, _, port = args.coordinator.rpartition(":")
    if args.process_id == 0:
        try:
            with socket.create_server(("", int(port))):
                return None
        except OSError as err:
            return f"--coordinator {args.coordinator}: cannot listen on port {port}: {err.strerror}"
    deadline = time.monotonic() + JOIN_TIMEOUT
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return None
        except OSError as err:
            if time.monotonic() > deadline:
                return (f"--coordinator {args.coordinator}: no process 0 there after "
                        f"{JOIN_TIMEOUT} s ({err.strerror or err})")
            time.sleep(0.5)
