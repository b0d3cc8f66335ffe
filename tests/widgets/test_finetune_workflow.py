"""Fine-tuning from the dock, and the Qt event loop staying responsive while work runs."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from conftest import labels_of
from qtpy.QtCore import QTimer
from test_workflow import _dock, _segment

from napari_diffseg.engine.checkpoint import load_checkpoint

TRAIN_WAIT_MS = 180_000


def _verify_two_frames(viewer, dock, truth):
    labels = labels_of(viewer, "run1")
    for frame in (0, 4):
        labels.data[frame] = truth[frame]  # the "corrected" frame: the true labels
        labels.paint((frame, 1, 1), int(truth[frame, 1, 1]))  # and a real paint stroke
        dock.toggle_verified(frame)
    assert dock.session.state.verified == [0, 4]


@pytest.fixture
def verified(make_napari_viewer, qtbot, video_file, tiny_checkpoint):
    """(viewer, dock, video path): segmented, frames 0 and 4 corrected and verified, no
    validation share."""
    path, _, truth = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    _verify_two_frames(viewer, dock, truth)
    dock.finetune.val_fraction.setValue(0.0)
    return viewer, dock, path


def test_fine_tune_writes_a_checkpoint_reports_loss_and_resegments(qtbot, verified):
    """With temporal context and anchors (the frame-wise start model is expanded)."""
    viewer, dock, path = verified
    dock.finetune.iterations.setValue(6)
    dock.finetune.context_frames.setValue(1)
    dock.finetune.anchor_frames.setValue(2)
    output = path.parent / "run1.diffseg" / "models" / "model-001.pt"  # the history's first
    assert dock.finetune.output.text() == str(output)
    worker = dock.start_finetune()
    assert worker is not None and not dock.finetune.start_button.isEnabled()
    qtbot.waitUntil(lambda: dock.finetune_worker is None, timeout=TRAIN_WAIT_MS)
    events = dock._control.events
    kinds = [e["kind"] for e in events]
    assert "error" not in kinds, events
    progress = [e for e in events if e["kind"] == "progress"]
    assert [e["iteration"] for e in progress] == list(range(1, 7))
    assert all(math.isfinite(e["losses"]["total"]) for e in progress)
    assert kinds[-1] == "done" and output.is_file()
    ckpt = load_checkpoint(output)
    assert ckpt.classes == dock.session.state.classes
    assert ckpt.model_config["context_frames"] == 1  # the model now sees frames t +- 1
    assert ckpt.data_summary["anchored_frames"] > 0  # frames 1, 2, 3, 5, 6 near 0 and 4
    record = json.loads(output.with_suffix(".json").read_text())  # kept in the history
    assert record["options"]["context_frames"] == 1 and record["options"]["anchor_frames"] == 2
    assert record["kind"] == "finetune" and record["verified"] == [0, 4]
    assert record["iterations"] == 6 and record["parent"].endswith("tiny.pt")
    assert dock.finetune.output.text().endswith("model-002.pt")  # the next run's name
    assert len(dock.finetune.plot.loss) == 6
    assert dock.finetune.start_button.isEnabled()
    assert dock.finetune.resegment_button.isEnabled()
    # one click: the unverified frames are segmented again by the new model
    verified_before = np.array(labels_of(viewer, "run1").data[[0, 4]])
    dock.finetune.resegment_button.click()
    qtbot.waitUntil(lambda: dock.segment_worker is None, timeout=60_000)
    assert dock.session.state.model == str(output)
    assert dock.seg_progress.maximum() == 6  # 8 frames minus the 2 verified ones
    np.testing.assert_array_equal(labels_of(viewer, "run1").data[[0, 4]], verified_before)


def test_stop_keeps_a_checkpoint_and_enables_the_ui(qtbot, verified):
    _, dock, _ = verified
    dock.finetune.iterations.setValue(5000)
    dock.start_finetune()
    qtbot.waitUntil(lambda: dock.finetune.progress.value() >= 2, timeout=TRAIN_WAIT_MS)
    dock.finetune.stop_button.click()
    qtbot.waitUntil(lambda: dock.finetune_worker is None, timeout=30_000)
    done = [e for e in dock._control.events if e["kind"] == "done"]
    assert done and done[0]["stopped"] is True
    assert load_checkpoint(done[0]["path"]).metrics["iterations"] < 5000
    assert dock.finetune.start_button.isEnabled() and not dock.finetune.stop_button.isEnabled()
    assert not dock._control.process.alive


class Heartbeat:
    """Records the longest gap between ticks of a 20 ms QTimer on the Qt thread."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.max_gap = 0.0
        self.ticks = 0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.max_gap = max(self.max_gap, now - self.last)
        self.last = now
        self.ticks += 1

    def start(self) -> None:
        self.last, self.max_gap, self.ticks = None, 0.0, 0
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()


def test_event_loop_keeps_answering_while_segmenting_and_training(
    make_napari_viewer, qtbot, tmp_path, tiny_checkpoint
):
    """The Qt event loop keeps answering while the bundled model segments a 192x192 video and
    while fine-tuning runs: the work is in worker threads/processes, so no step of it holds the
    loop. Work done on the Qt thread (model load, torch import, a whole frame's sampling)
    stalls it for seconds; the bound here is 1 s so that scheduling noise on a loaded CI
    machine does not fail it. The 200 ms target is measured, under load, by
    benchmarks/bench_event_loop.py (docs/benchmarks.md), not asserted here."""
    import tifffile

    from napari_diffseg.data import SyntheticConfig, generate_sequence

    seq = generate_sequence(SyntheticConfig(size=192, frames=6, seed=5))
    path = tmp_path / "busy.tif"
    tifffile.imwrite(path, seq.frames)
    viewer = make_napari_viewer(show=True)
    dock = _dock(viewer, path)  # the bundled model
    dock.steps_spin.setValue(4)
    dock.samples_spin.setValue(4)
    beat = Heartbeat()
    beat.start()
    _segment(qtbot, dock)
    beat.stop()
    seg_gap, seg_ticks = beat.max_gap, beat.ticks
    assert dock.seg_progress.value() == 6
    labels = labels_of(viewer, "busy")
    labels.data[2] = seq.labels[2]
    labels.paint((2, 0, 0), int(seq.labels[2, 0, 0]))
    dock.toggle_verified(2)
    dock.model_edit.setText(str(tiny_checkpoint))  # fine-tune a tiny model: a short test
    dock.finetune.iterations.setValue(15)
    dock.finetune.val_fraction.setValue(0.0)
    beat.start()
    dock.start_finetune()
    qtbot.waitUntil(lambda: dock.finetune_worker is None, timeout=TRAIN_WAIT_MS)
    beat.stop()
    assert [e for e in dock._control.events if e["kind"] == "done"]
    print(f"max event-loop gap: segmenting {seg_gap * 1000:.0f} ms ({seg_ticks} ticks), "
          f"fine-tuning {beat.max_gap * 1000:.0f} ms ({beat.ticks} ticks)")
    assert seg_ticks > 20 and beat.ticks > 20
    assert seg_gap < 1.0, f"event loop blocked for {seg_gap * 1000:.0f} ms while segmenting"
    assert beat.max_gap < 1.0, (
        f"event loop blocked for {beat.max_gap * 1000:.0f} ms while fine-tuning")
