"""Orbax checkpoints of a run: one ``CheckpointManager`` in ``<run>/checkpoints`` keeps
the latest epochs (for resume) and the epoch with the best selection accuracy, and
``<run>/best`` links to that epoch.

Each step holds three items: ``params``, ``opt_state`` and ``metadata`` (JSON: preset,
data set, normalisation, metrics, config), so restoring needs nothing from outside.
Orbax writes a step to a temporary directory and renames it when complete, so a step
half-written by a crash is never listed, never loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from lenet_jax import models
from lenet_jax.errors import UserError

CHECKPOINTS_DIR = "checkpoints"
BEST_LINK = "best"
SELECTION_METRIC = "selection_accuracy"
KEEP_LATEST = 3


class CheckpointError(UserError, RuntimeError):
    """A checkpoint path that cannot be restored; the message says why."""


def _options() -> ocp.CheckpointManagerOptions:
    def selection(metrics: dict) -> float:
        return metrics[SELECTION_METRIC]

    return ocp.CheckpointManagerOptions(
        best_fn=selection, best_mode="max", create=True,
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(KEEP_LATEST), policies.BestN(get_metric_fn=selection, n=1)]),
    )


class RunCheckpoints:
    """The checkpoints of one run directory: the latest few epochs and the best."""

    def __init__(self, run_dir: Path, writes_links: bool = True):
        self.run_dir = Path(run_dir).absolute()
        self.writes_links = writes_links  # of several processes, one makes the links
        self.manager = _open(self.run_dir / CHECKPOINTS_DIR, _options())

    def save(self, epoch: int, params: Any, opt_state: Any, metadata: dict) -> None:
        """Save epoch ``epoch``, wait until it is on disk, and point ``<run>/best`` at the
        best epoch."""
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            metadata=ocp.args.JsonSave(metadata),
        )
        self.manager.save(epoch, args=args,
                          metrics={SELECTION_METRIC: metadata[SELECTION_METRIC]})
        self.manager.wait_until_finished()
        if self.writes_links:
            _link(self.run_dir / BEST_LINK,
                  self.manager.directory / str(self.manager.best_step()))

    def latest_epoch(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(self, abstract_params: Any = None,
                       abstract_opt_state: Any = None) -> tuple[Any, Any, dict]:
        """(params, opt_state, metadata) of the latest complete epoch; with no abstract
        trees given, only the metadata is read (params and opt_state are None)."""
        epoch = self.manager.latest_step()
        if epoch is None:
            raise CheckpointError(f"no checkpoint to resume from in {self.manager.directory}")
        items = {"metadata": ocp.args.JsonRestore()}
        if abstract_params is not None:
            items |= {"params": ocp.args.StandardRestore(abstract_params),
                      "opt_state": ocp.args.StandardRestore(abstract_opt_state)}
        restored = _restore(self.manager, epoch, items)
        return restored.get("params"), restored.get("opt_state"), restored["metadata"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _restore(manager: ocp.CheckpointManager, step: int, items: dict) -> dict:
    """The ``items`` of ``step``; any failure (truncated files, wrong shapes, garbage) is a
    ``CheckpointError`` naming the step."""
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as err:
        first_line = str(err).splitlines()[0] if str(err) else "unreadable"
        raise CheckpointError(f"cannot restore {Path(manager.directory) / str(step)}: "
                              f"{type(err).__name__}: {first_line}") from None
    if "metadata" in items and not isinstance(restored.get("metadata"), dict):
        raise CheckpointError(f"{Path(manager.directory) / str(step)}: metadata is missing")
    return dict(restored)


def _link(link: Path, target: Path) -> None:
    """Make ``link`` a relative symlink to ``target``, atomically; a real directory of
    that name is left alone."""
    if link.exists() and not link.is_symlink():
        return
    tmp = link.with_name(f".{link.name}-link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path(os.path.relpath(target, link.parent)))
    os.replace(tmp, link)


def point_workdir_best(workdir: Path, run_dir: Path, writes_links: bool = True) -> None:
    """``workdir/best`` -> this run's ``best``: the latest run's best epoch."""
    if writes_links:
        _link(Path(workdir) / BEST_LINK, Path(run_dir) / BEST_LINK)


def abstract_on_this_device(tree: Any) -> Any:
    """Shapes and dtypes of ``tree`` placed on this process's first device: a restore
    target that works whatever device wrote the checkpoint (and, of several processes,
    on each)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
    )


def abstract_params(preset_name: str) -> Any:
    """Shapes and dtypes of a preset's params, on this device, without computing them."""
    module, _ = models.create_model(preset_name)
    shapes = jax.eval_shape(lambda key: models.init_params(module, key), jax.random.key(0))
    return abstract_on_this_device(shapes)


def resolve_step(path: str | os.PathLike) -> tuple[Path, int]:
    """(manager directory, step) for a step dir (``runs/best`` links to one), a manager
    dir (its latest step) or a run dir (its latest epoch)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise CheckpointError(f"checkpoint path {path} links to {os.readlink(path)}, which "
                              "no longer exists (was its run deleted?)")
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is not a directory")
    path = path.resolve()
    if path.name.isdigit() and (path / "metadata").is_dir():
        return path.parent, int(path.name)
    for manager_dir in (path, path / CHECKPOINTS_DIR):
        if manager_dir.is_dir() and (step := _latest_step(manager_dir)) is not None:
            return manager_dir, step
    raise CheckpointError(
        f"{path} holds no lenet-jax checkpoint (expected runs/best, a run directory or a step)"
    )


def _latest_step(manager_dir: Path) -> int | None:
    manager = _open(manager_dir)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def _open(manager_dir: Path,
          options: ocp.CheckpointManagerOptions | None = None) -> ocp.CheckpointManager:
    """A ``CheckpointManager`` on ``manager_dir``; one that cannot read what is there
    (it reads each step's metrics and metadata) is a ``CheckpointError``."""
    try:
        return ocp.CheckpointManager(manager_dir, options=options)
    except Exception as err:
        first_line = str(err).splitlines()[0] if str(err) else "unreadable"
        raise CheckpointError(f"cannot read the checkpoints in {manager_dir}: "
                              f"{type(err).__name__}: {first_line}") from None


def restore_for_inference(path: str | os.PathLike) -> tuple[Any, dict]:
    """(params, metadata) from a checkpoint path alone; see ``resolve_step``."""
    manager_dir, step = resolve_step(path)
    manager = _open(manager_dir)
    try:
        metadata = _restore(manager, step, {"metadata": ocp.args.JsonRestore()})["metadata"]
        if metadata.get("preset") not in models.PRESETS:
            raise CheckpointError(f"{manager_dir / str(step)}: metadata names no known preset")
        params = _restore(manager, step, {
            "params": ocp.args.StandardRestore(abstract_params(metadata["preset"]))})["params"]
    finally:
        manager.close()
    return params, metadata
