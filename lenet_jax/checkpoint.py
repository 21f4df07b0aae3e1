"""Orbax checkpoints of a run: one ``CheckpointManager`` in ``<run>/checkpoints`` keeps
the latest epochs (for resume) and the epoch with the best selection accuracy, and
``<run>/best`` links to that epoch.

Each step holds three items: ``params``, ``opt_state`` and ``metadata`` (JSON: preset,
data set, normalisation, metrics, config), so restoring needs nothing from outside.
Orbax writes a step to a temporary directory and renames it when complete, so a step
half-written by a crash is never listed, never loaded.
"""

from __future__ import annotations

import errno
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
        try:
            self.manager.save(epoch, args=args,
                              metrics={SELECTION_METRIC: metadata[SELECTION_METRIC]})
            self.manager.wait_until_finished()
        except OSError:
            raise
        except Exception as err:  # TensorStore reports a full disk as a ValueError
            raise _write_error(err, self.manager.directory / str(epoch)) from None
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


def _write_error(err: Exception, step_dir: Path) -> OSError:
    """A failed save as the OSError it is (ENOSPC for a full disk), for the CLI's exit 4."""
    text = str(err)
    full = "RESOURCE_EXHAUSTED" in text or "No space left" in text
    first_line = text.splitlines()[0] if text else type(err).__name__
    return OSError(errno.ENOSPC if full else errno.EIO,
                   os.strerror(errno.ENOSPC) if full else first_line, str(step_dir))


def saved_epochs(run_dir: str | os.PathLike) -> list[int]:
    """The epochs saved in ``run_dir``'s checkpoints, from the directory's names alone
    (Orbax renames a step into place once it is complete); [] when there are none."""
    try:
        steps = (Path(run_dir) / CHECKPOINTS_DIR).iterdir()
        return sorted(int(p.name) for p in steps if p.name.isdigit() and p.is_dir())
    except OSError:
        return []


# What every restore reads from a checkpoint's metadata, and of which type: metadata
# edited by hand or damaged is refused in one line naming the key.
METADATA_TYPES = {"preset": str, "dataset": str, "class_names": list, "epoch": int,
                  "step": int, "config": dict}


def checked_metadata(metadata: Any, step_dir: Path) -> dict:
    """``metadata`` if it holds what a restore reads; else ``CheckpointError``."""
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{step_dir}: metadata is missing")
    if not isinstance(metadata.get("preset"), str) or metadata["preset"] not in models.PRESETS:
        raise CheckpointError(f"{step_dir}: metadata names no known preset")
    for key, kind in METADATA_TYPES.items():
        value = metadata.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{step_dir}: the metadata's {key!r} is missing or not a "
                                  f"{kind.__name__} (was it edited?)")
    names = metadata["class_names"]
    classes = models.CLASSES
    if len(names) != classes or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{step_dir}: the metadata's 'class_names' must be {classes} "
                              f"names, got {len(names)}")
    if metadata["epoch"] < 1 or metadata["step"] < 0:
        raise CheckpointError(f"{step_dir}: the metadata's epoch and step must be positive")
    return metadata


def _restore(manager: ocp.CheckpointManager, step: int, items: dict) -> dict:
    """The ``items`` of ``step``; any failure (truncated files, wrong shapes, garbage) is a
    ``CheckpointError`` naming the step."""
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as err:
        raise CheckpointError(f"cannot restore {Path(manager.directory) / str(step)}: "
                              f"{_reason(err)}") from None
    if "metadata" in items:
        checked_metadata(restored.get("metadata"), Path(manager.directory) / str(step))
    return dict(restored)


def _reason(err: BaseException) -> str:
    """The innermost cause's first line: Orbax wraps TensorStore's words ("Error reading
    "F6.kernel/0.0" ...: Truncated Zstd-compressed stream") in a line that ends in an object's
    many-line repr."""
    while (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    line = str(err).splitlines()[0] if str(err) else "unreadable"
    return f"{type(err).__name__}: {line.split(' See full TensorStore details')[0]}"


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


def writes_into_checkpoints(path: str | os.PathLike, ckpt: str | os.PathLike) -> bool:
    """Whether writing under ``path`` would add files among the checkpoints that hold
    ``ckpt`` (a checkpoint path, as ``resolve_step`` takes it)."""
    manager_dir, _ = resolve_step(ckpt)
    return Path(path).resolve().is_relative_to(manager_dir.resolve())


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
    try:
        path.stat()
    except OSError as err:
        raise CheckpointError(_unreachable(path, err)) from None
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


def _unreachable(path: Path, err: OSError) -> str:
    """Why ``path`` (whose ``stat`` failed with ``err``) cannot be read, in words."""
    if err.errno == errno.ENOENT and path.is_symlink():
        return (f"checkpoint path {path} links to {os.readlink(path)}, which no longer "
                "exists (was its run deleted?)")
    if err.errno == errno.ENOENT:
        return f"checkpoint path {path} does not exist"
    if err.errno == errno.ELOOP:
        return f"checkpoint path {path} is a loop of symbolic links"
    return f"cannot read checkpoint path {path}: {err.strerror}"


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
        params = _restore(manager, step, {
            "params": ocp.args.StandardRestore(abstract_params(metadata["preset"]))})["params"]
    finally:
        manager.close()
    return params, metadata


def load(path: str | os.PathLike) -> tuple[models.LeNet, Any, dict]:
    """(model, params, metadata) of a trained checkpoint, ready for ``inference.predict``:
    ``path`` as ``resolve_step`` takes it (``runs/best``, a run directory, a step)."""
    params, metadata = restore_for_inference(path)
    model, _ = models.create_model(metadata["preset"])
    return model, params, metadata
