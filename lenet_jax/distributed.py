"""Several processes, one training run: ``train.py --distributed``.

Each process runs the same command with its own ``--process-id``; ``jax.distributed``
joins them, and the mesh of ``training.make_mesh`` then spans every device of every
process. Without the three flags JAX detects the cluster (SLURM, Kubernetes, TPU pods).
On CPU the processes reduce gradients through gloo.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

# Seconds to wait for process 0 (LENET_JAX_JOIN_TIMEOUT changes it), and for a silent
# process to count as gone.
JOIN_TIMEOUT = int(os.environ.get("LENET_JAX_JOIN_TIMEOUT", "60"))
HEARTBEAT_TIMEOUT = 30


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


def writes_the_run() -> bool:
    """Whether this process writes the run directory: metrics, plots, TensorBoard, links
    and the lock (Orbax coordinates the checkpoint itself). Process 0 of several."""
    import jax

    return jax.process_count() == 1 or jax.process_index() == 0


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
