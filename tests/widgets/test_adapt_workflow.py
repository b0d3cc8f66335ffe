""""Adapt to this video" from the dock: no verified frame, progress, Stop, a checkpoint that
the re-segment button then uses."""

from __future__ import annotations

import json
import math

from qtpy.QtCore import Qt
from test_workflow import _dock

from napari_diffseg.engine.checkpoint import load_checkpoint

TRAIN_WAIT_MS = 180_000


def test_adapt_with_no_verified_frame_shows_progress_stops_and_resegments(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint
):
    path, frames, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    assert dock.session.state.verified == []
    dock.finetune.iterations.setValue(5000)
    output = path.parent / "run1.diffseg" / "models" / "model-001.pt"  # the history's first
    qtbot.mouseClick(dock.finetune.adapt_button, Qt.LeftButton)
    assert dock.finetune_worker is not None
    assert not dock.finetune.adapt_button.isEnabled() and dock.finetune.stop_button.isEnabled()
    # the first segmentation and the prior report progress in frames, then training starts
    qtbot.waitUntil(lambda: dock.finetune.progress.value() >= 2 and
                    "iterations" in dock.finetune.progress.format(), timeout=TRAIN_WAIT_MS)
    events = dock._control.events
    stages = {e.get("stage") for e in events if e["kind"] == "status"}
    assert {"segment", "prior", "train"} <= stages
    assert dock.finetune.progress.maximum() == 5000
    qtbot.mouseClick(dock.finetune.stop_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.finetune_worker is None, timeout=60_000)
    kinds = [e["kind"] for e in events]
    assert "error" not in kinds, events
    done = events[-1]
    assert done["kind"] == "done" and done["stopped"] is True
    assert done["path"] == str(output) and output.is_file()
    assert done["metrics"]["pseudo_labels"]["verified"] == 0
    assert 2 <= load_checkpoint(output).metrics["iterations"] < 5000
    progress = [e for e in events if e["kind"] == "progress"]
    assert all(math.isfinite(e["losses"]["total"]) for e in progress)
    assert not dock._control.process.alive
    assert dock.finetune.adapt_button.isEnabled()
    # the adapted model segments the (all unverified) frames
    assert dock.finetune.resegment_button.isEnabled()
    qtbot.mouseClick(dock.finetune.resegment_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.segment_worker is None, timeout=60_000)
    assert dock.session.state.model == str(output)
    assert dock.seg_progress.value() == dock.seg_progress.maximum() == frames.shape[0]
    # the run is in the model history, and every frame says which model made its labels
    record = json.loads(output.with_suffix(".json").read_text())
    assert record["kind"] == "adapt" and record["parent"].endswith("tiny.pt")
    assert set(dock.session.state.label_source) == {"model-001"}
