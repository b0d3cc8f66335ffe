"""The Fine-tune tab tells what it validates on and how the model stood before training, and
shows the re-segmentation it starts (progress and Cancel) where the user is (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import labels_of
from qtpy.QtCore import Qt
from test_finetune_workflow import TRAIN_WAIT_MS
from test_workflow import _dock, _segment

import napari_diffseg.widgets._dock as dock_module
from napari_diffseg.engine.finetune import held_out_frames


def _fine_tune(make_napari_viewer, qtbot, video_file, tiny_checkpoint, refit=False):
    """Segment the video, verify frames 0, 3 and 6 with their true labels and fine-tune 4
    iterations with a third of them held out (`refit`: then, if kept, on all of them);
    (dock, Fine-tune panel, the run's events)."""
    path, _, truth = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    labels = labels_of(viewer, "run1")
    for frame in (0, 3, 6):
        labels.data[frame] = truth[frame]
        labels.paint((frame, 1, 1), int(truth[frame, 1, 1]))
        dock.toggle_verified(frame)
    panel = dock.finetune
    dock.tabs.setCurrentWidget(panel)
    panel.iterations.setValue(4)
    panel.val_fraction.setValue(0.34)
    panel.refit.setChecked(refit)
    qtbot.mouseClick(panel.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.finetune_worker is None, timeout=TRAIN_WAIT_MS)
    events = dock._control.events
    assert "error" not in [e["kind"] for e in events], events
    return dock, panel, events


def _hold_after_each_frame(monkeypatch) -> None:
    """The engine's segmentation waits after each frame until Cancel is pressed (10 s at
    most), so that a test presses Cancel mid-run however fast this machine segments."""
    import time

    import napari_diffseg.engine.pipeline as pipeline  # the dock segments through it

    real = pipeline.iter_segment

    def held(*args, should_stop=None, **kwargs):
        for chunk in real(*args, should_stop=should_stop, **kwargs):
            yield chunk
            deadline = time.monotonic() + 10
            while should_stop is not None and not should_stop() and time.monotonic() < deadline:
                time.sleep(0.01)

    monkeypatch.setattr(pipeline, "iter_segment", held)


def test_fine_tune_shows_held_out_frames_dice_before_and_resegments_in_its_tab(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint, monkeypatch
):
    # a 4-iteration run of an untrained tiny model may or may not beat where it started; this
    # test is about the tab's display and re-segmentation, so the new model counts as better
    # (the other outcome: test_a_worse_model_is_listed_but_not_used)
    monkeypatch.setattr(dock_module, "worse_than_before", lambda best, before: False)
    dock, panel, events = _fine_tune(make_napari_viewer, qtbot, video_file, tiny_checkpoint)

    (held,) = held_out_frames([0, 3, 6], 0.34)
    assert f"frame {held} " in panel.val_frames.text()
    before = next(e for e in events if e["kind"] == "validation_before")["val_dice"]
    assert panel.plot.before == before
    assert f"{before:.3f} before training" in panel.status.text()
    assert "before" in panel.plot.legend_text()
    ticks = panel.plot.ticks()
    assert ticks["x"] == ["0", "2", "4"] and len(ticks["loss"]) == 3
    assert ticks["dice"] == ["1", "0.5", "0"]
    panel.plot.resize(400, 160)
    panel.plot.grab()  # paints the axes without error

    # re-segmenting from this tab shows its progress and Cancel here
    assert panel.reseg_progress.isHidden() and panel.reseg_cancel_button.isHidden()
    _hold_after_each_frame(monkeypatch)
    qtbot.mouseClick(panel.resegment_button, Qt.LeftButton)
    assert dock.segment_worker is not None
    assert not panel.reseg_progress.isHidden() and panel.reseg_cancel_button.isEnabled()
    assert panel.reseg_progress.maximum() == 5  # 8 frames minus the 3 verified
    qtbot.waitUntil(lambda: panel.reseg_progress.value() >= 1, timeout=60_000)
    qtbot.mouseClick(panel.reseg_cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.segment_worker is None, timeout=10_000)
    assert panel.reseg_progress.isHidden()
    assert "cancelled" in dock.seg_status.text()
    assert dock.session.state.verified == [0, 3, 6]


def test_a_worse_model_is_listed_but_not_used(make_napari_viewer, qtbot, video_file,
                                              tiny_checkpoint, monkeypatch):
    """A fine-tuned model that scores lower on the held-out frames than its start does not
    replace the user's model: the tab says so with both Dice, the re-segment button stays
    off, and the new checkpoint is still written and listed for the user to choose."""
    monkeypatch.setattr(dock_module, "worse_than_before", lambda best, before: True)
    dock, panel, events = _fine_tune(make_napari_viewer, qtbot, video_file, tiny_checkpoint)
    done = next(e for e in events if e["kind"] == "done")
    before = next(e for e in events if e["kind"] == "validation_before")["val_dice"]
    status = panel.status.text()
    assert "not better than before" in status and "current model kept" in status
    assert f"{before:.3f} before training" in status
    assert dock.last_checkpoint != done["path"]
    assert not panel.resegment_button.isEnabled()
    assert Path(done["path"]).is_file()


def test_the_held_out_frames_are_trained_on_at_the_end_of_a_kept_run(
        make_napari_viewer, qtbot, video_file, tiny_checkpoint):
    """With *then train on them too* ticked the run is asked for a last stage (a third of 4
    iterations: 1); whether it runs is the engine's call (not below the start model), and the
    tab, the progress and the model's record follow what happened."""
    dock, panel, events = _fine_tune(make_napari_viewer, qtbot, video_file, tiny_checkpoint,
                                     refit=True)
    started = next(e for e in events if e["kind"] == "started")
    assert started["refit_iterations"] == 1
    (held,) = held_out_frames([0, 3, 6], 0.34)
    assert f"frame {held} " in panel.val_frames.text()
    assert "then trained on if kept" in panel.val_frames.text()
    done = next(e for e in events if e["kind"] == "done")
    ran = [e for e in events if e["kind"] == "refit"]
    if ran:  # kept: 4 + 1 iterations, the last on all three verified frames
        assert ran[0] == {"kind": "refit", "iterations": 1, "total": 5, "frames": 1}
        assert panel.progress.maximum() == 5 and panel.progress.value() == 5
        assert done["metrics"]["refit_iterations"] == 1
    else:  # validated below the start: the validated weights stay
        assert "refit_iterations" not in done["metrics"]
        assert panel.progress.maximum() == 4
    record = json.loads(Path(done["path"]).with_suffix(".json").read_text())
    assert record["refit_iterations"] == (1 if ran else 0)
