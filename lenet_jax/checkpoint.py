"""Orbax checkpoints of a run: ``<run>/checkpoints`` (the last few epochs, for resume)
and ``<run>/best`` (the epoch with the best selection accuracy).

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

from lenet_jax import models

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
SELECTION_METRIC = "selection_accuracy"


class CheckpointError(RuntimeError):
    """A checkpoint path that cannot be restored; the message says why."""


def _managers_options(best: bool, max_to_keep: int) -> ocp.CheckpointManagerOptions:
    if best:
        return ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m[SELECTION_METRIC], best_mode="max", create=True
        )
    return ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)


class RunCheckpoints:
    """The two managers of one run directory."""

    def __init__(self, run_dir: Path, max_to_keep: int = 3):
        self.run_dir = Path(run_dir).absolute()
        self.latest = ocp.CheckpointManager(
            self.run_dir / LATEST_DIR, options=_managers_options(False, max_to_keep)
        )
        self.best = ocp.CheckpointManager(
            self.run_dir / BEST_DIR, options=_managers_options(True, max_to_keep)
        )

    def save(self, epoch: int, params: Any, opt_state: Any, metadata: dict) -> None:
        """Save epoch ``epoch`` to latest, and to best (which keeps only the best)."""
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            metadata=ocp.args.JsonSave(metadata),
        )
        self.latest.save(epoch, args=args)
        self.best.save(epoch, args=args, metrics={SELECTION_METRIC: metadata[SELECTION_METRIC]})

    def wait_until_finished(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def latest_epoch(self) -> int | None:
        return self.latest.latest_step()

    def latest_metadata(self) -> dict:
        """The metadata item of the latest complete epoch."""
        epoch = self.latest.latest_step()
        try:
            restored = self.latest.restore(
                epoch, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
            )
        except Exception as err:
            raise CheckpointError(_unreadable(self.latest.directory, epoch, err)) from None
        if not isinstance(restored.metadata, dict):
            raise CheckpointError(f"{self.latest.directory}/{epoch}: metadata is missing")
        return restored.metadata

    def restore_latest(
        self, abstract_params: Any, abstract_opt_state: Any
    ) -> tuple[Any, Any, dict]:
        """(params, opt_state, metadata) of the latest complete epoch."""
        epoch = self.latest.latest_step()
        if epoch is None:
            raise CheckpointError(f"no checkpoint to resume from in {self.latest.directory}")
        try:
            restored = self.latest.restore(
                epoch,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_params),
                    opt_state=ocp.args.StandardRestore(abstract_opt_state),
                    metadata=ocp.args.JsonRestore(),
                ),
            )
        except Exception as err:
            raise CheckpointError(_unreadable(self.latest.directory, epoch, err)) from None
        return restored.params, restored.opt_state, restored.metadata

    def close(self) -> None:
        self.wait_until_finished()
        self.latest.close()
        self.best.close()


def _unreadable(directory: Path, step: int, err: Exception) -> str:
    first_line = str(err).splitlines()[0] if str(err) else "unreadable"
    return f"cannot restore {Path(directory) / str(step)}: {type(err).__name__}: {first_line}"


def abstract_on_this_device(tree: Any) -> Any:
    """Shapes and dtypes of ``tree`` placed on this process's default device: a restore
    target that works whatever device wrote the checkpoint."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
    )


def abstract_params(preset_name: str) -> Any:
    """Shapes and dtypes of a preset's params, on this device, without computing them."""
    module, _ = models.create_model(preset_name)
    shapes = jax.eval_shape(lambda key: models.init_params(module, key), jax.random.key(0))
    return abstract_on_this_device(shapes)


def _is_step_dir(path: Path) -> bool:
    return path.name.isdigit() and (path / "metadata").is_dir()


def resolve_step(path: str | os.PathLike) -> tuple[Path, int]:
    """(manager directory, step) for a step dir, a manager dir (its latest step) or a
    run dir (its latest epoch)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is not a directory")
    if _is_step_dir(path):
        return path.parent, int(path.name)
    for manager_dir in (path, path / LATEST_DIR):
        steps = [int(p.name) for p in manager_dir.iterdir() if _is_step_dir(p)] if (
            manager_dir.is_dir()
        ) else []
        if steps:
            return manager_dir, max(steps)
    raise CheckpointError(
        f"{path} holds no lenet-jax checkpoint (expected runs/best, a run directory or a step)"
    )


def restore_for_inference(path: str | os.PathLike) -> tuple[Any, dict]:
    """(params, metadata) from a checkpoint path alone; see ``resolve_step``."""
    manager_dir, step = resolve_step(path)
    manager = ocp.CheckpointManager(manager_dir.absolute())
    try:
        metadata = manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
        metadata = metadata.metadata
        preset = metadata.get("preset") if isinstance(metadata, dict) else None
        if preset not in models.PRESETS:
            raise CheckpointError(f"{manager_dir / str(step)}: metadata names no known preset")
        restored = manager.restore(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params(preset))),
        )
    except CheckpointError:
        raise
    except Exception as err:  # truncated files, wrong shapes, garbage
        raise CheckpointError(_unreadable(manager_dir, step, err)) from None
    finally:
        manager.close()
    return restored.params, metadata
