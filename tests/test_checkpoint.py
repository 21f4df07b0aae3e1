"""The run's Orbax checkpoints: which epochs are kept, which one ``best`` names, and what a
restore refuses."""

import re

import numpy as np
import pytest

from lenet_jax import checkpoint


def _save(run: checkpoint.RunCheckpoints, epoch: int, accuracy: float, preset="original"):
    params = {"w": np.full((3,), float(epoch), np.float32)}
    run.save(epoch, params, {"count": np.zeros((), np.int32)},
             {"preset": preset, "epoch": epoch, checkpoint.SELECTION_METRIC: accuracy})


def test_best_links_the_most_accurate_epoch_and_latest_three_are_kept(tmp_path):
    accuracies = [0.5, 0.9, 0.7, 0.6, 0.4, 0.55]
    run = checkpoint.RunCheckpoints(tmp_path / "run")
    try:
        for epoch, accuracy in enumerate(accuracies, start=1):
            _save(run, epoch, accuracy)
            best_so_far = 1 + int(np.argmax(accuracies[:epoch]))
            assert (tmp_path / "run" / "best").resolve().name == str(best_so_far), epoch
    finally:
        run.close()
    kept = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()
                  if p.name.isdigit())
    assert kept == [2, 4, 5, 6]  # the best, and the latest three
    assert run.latest_epoch() == 6


def test_a_checkpoint_naming_an_unknown_preset_is_refused(tmp_path):
    run = checkpoint.RunCheckpoints(tmp_path / "run")
    _save(run, 1, 0.5, preset="lenet7")
    run.close()
    with pytest.raises(checkpoint.CheckpointError, match=r"1: metadata names no known preset"):
        checkpoint.restore_for_inference(tmp_path / "run" / "best")


_METADATA = {"preset": "original", "dataset": "mnist", "class_names": list("0123456789"),
             "epoch": 1, "step": 10, "config": {}, checkpoint.SELECTION_METRIC: 0.5}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.pop("epoch"), "the metadata's 'epoch' is missing or not a int"),
    (lambda m: m.pop("step"), "the metadata's 'step' is missing or not a int"),
    (lambda m: m.pop("class_names"), "the metadata's 'class_names' is missing or not a list"),
    (lambda m: m.update(class_names=["a", "b", "c"]), "'class_names' must be 10 names, got 3"),
    (lambda m: m.update(preset=["original"]), "metadata names no known preset"),
    (lambda m: m.update(config="x"), "the metadata's 'config' is missing or not a dict"),
    (lambda m: m.update(epoch=True), "the metadata's 'epoch' is missing or not a int"),
    (lambda m: m.update(epoch=0), "the metadata's epoch and step must be positive"),
])
def test_metadata_edited_by_one_key_is_refused_naming_it(tmp_path, edit, message):
    """A real Orbax checkpoint whose metadata was edited by hand: every restore (for
    inference, for a resume) refuses it in one line naming the key."""
    metadata = dict(_METADATA)
    edit(metadata)
    run = checkpoint.RunCheckpoints(tmp_path / "run")
    run.save(1, {"w": np.zeros(3, np.float32)}, {"count": np.zeros((), np.int32)},
             metadata | {checkpoint.SELECTION_METRIC: 0.5})
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(message)):
        run.restore_latest()
    run.close()
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(message)):
        checkpoint.restore_for_inference(tmp_path / "run" / "best")
