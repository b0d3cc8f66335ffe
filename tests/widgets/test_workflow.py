"""The dock in a real napari viewer: segment, correct, verify, save, reopen, cancel, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from conftest import labels_of
from testutils import marking_and_bolus

from napari_diffseg.widgets import DiffSegWidget

PLUGIN = "napari-diffseg"
WAIT_MS = 60_000


def _dock(viewer, video, checkpoint=None) -> DiffSegWidget:
    viewer.open(str(video), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Diffusion segmentation")
    assert isinstance(dock, DiffSegWidget)
    if checkpoint is not None:
        dock.model_edit.setText(str(checkpoint))
    dock.steps_spin.setValue(2)
    dock.samples_spin.setValue(2)
    return dock


def _segment(qtbot, dock, which="all", timeout=WAIT_MS):
    worker = dock.start_segmentation(which)
    assert worker is not None
    qtbot.waitUntil(lambda: dock.segment_worker is None, timeout=timeout)
    return worker


def _state(folder) -> dict:
    return json.loads((folder / "state.json").read_text())


def test_segment_puts_labels_and_uncertainty_into_the_viewer(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint
):
    path, frames, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    assert dock.video_combo.currentText() == "run1"
    _segment(qtbot, dock)
    labels = labels_of(viewer, "run1")
    assert labels.data.shape == frames.shape and labels.data.dtype == np.uint8
    assert list(labels.features["class"]) == ["background", "vessel", "catheter", "guidewire"]
    unc = viewer.layers["run1 uncertainty"]
    assert unc.data.shape == frames.shape and unc.blending == "additive"
    assert float(unc.data.max()) > 0
    # the review table ranks all 8 frames by uncertainty, most doubtful first
    rows = dock.review.rows()
    assert sorted(f for f, _ in rows) == list(range(8))
    scores = [dock.session.state.frame_scores[f] for f, _ in rows]
    assert scores == sorted(scores, reverse=True)
    assert {s for _, s in rows} == {"proposed"}
    assert "8/8 frames" in dock.seg_status.text() or "done" in dock.seg_status.text()
    # the user's own image layer is untouched and still first
    assert viewer.layers[0].name == "run1"
    # next-uncertain jumps to the top of the table
    assert dock.next_uncertain() == rows[0][0] or dock.current_frame() == rows[0][0]


def test_correction_and_verification_survive_closing_and_reopening(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint
):
    path, _, truth = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    labels = labels_of(viewer, "run1")
    dock.go_to_frame(2)
    labels.paint((2, 20, 30), 3)  # a real paint stroke through napari's Labels API
    assert labels.data[2, 20, 30] == 3
    assert dock.toggle_verified() is True
    corrected = np.array(labels.data[2])
    before_3 = np.array(labels.data[3])
    folder = path.parent / "run1.diffseg"
    # autosave writes within a few seconds of the edit
    qtbot.waitUntil(lambda: (folder / "state.json").is_file()
                    and _state(folder)["verified"] == [2], timeout=10_000)
    assert (folder / "Annotations" / "run1" / "00002.png").is_file()
    # re-segmenting never overwrites the verified frame
    _segment(qtbot, dock)
    np.testing.assert_array_equal(labels.data[2], corrected)
    assert dict(dock.review.rows())[2] == "verified"
    # painting frame 3 without verifying it is still saved on close
    labels.paint((3, 5, 5), 2)
    assert labels.data[3, 5, 5] == 2 and not np.array_equal(labels.data[3], before_3)
    edited_3 = np.array(labels.data[3])
    viewer.close()

    viewer2 = make_napari_viewer()
    dock2 = _dock(viewer2, path)
    restored = labels_of(viewer2, "run1")
    np.testing.assert_array_equal(restored.data[2], corrected)
    np.testing.assert_array_equal(restored.data[3], edited_3)
    assert dock2.session.state.verified == [2]
    assert 3 in dock2.session.state.edited
    assert float(viewer2.layers["run1 uncertainty"].data.max()) > 0
    assert dict(dock2.review.rows())[2] == "verified"
    # a re-run of "frames not verified" keeps both the verified and the edited frame
    assert 2 not in dock2.frames_to_segment("unverified")
    assert 3 not in dock2.frames_to_segment("unverified")


def test_key_bindings_verify_and_jump(make_napari_viewer, qtbot, video_file, tiny_checkpoint):
    from napari.utils.key_bindings import KeyBinding

    path, _, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    keymap = viewer.keymap
    verify = keymap[KeyBinding.from_str("K")]
    jump = keymap[KeyBinding.from_str("U")]
    dock.go_to_frame(5)
    verify(viewer)
    assert dock.session.state.verified == [5]
    jump(viewer)
    assert dock.current_frame() != 5
    assert dock.current_frame() == dock.session.next_uncertain() or \
        dock.current_frame() in dock.session.state.ranking(unverified_only=True)[:2]


def test_cancel_stops_quickly_and_enables_the_ui(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint
):
    import time

    path, _, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    dock.steps_spin.setValue(10)
    dock.samples_spin.setValue(16)
    worker = dock.start_segmentation("all")
    assert not dock.run_button.isEnabled() and dock.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: dock.seg_progress.value() >= 1, timeout=WAIT_MS)
    t0 = time.perf_counter()
    dock.cancel_segmentation()
    qtbot.waitUntil(lambda: dock.segment_worker is None, timeout=5_000)
    assert time.perf_counter() - t0 < 1.5
    assert worker is not None
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()
    assert "cancelled" in dock.seg_status.text()
    assert dock.seg_progress.value() < 8


def test_bad_file_and_bad_checkpoint_notify_and_keep_labels(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint, notifications, tmp_path
):
    path, _, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    labels = labels_of(viewer, "run1")
    labels.paint((1, 10, 10), 2)
    before = np.array(labels.data)

    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"this is not a video")
    dock.open_video(bad_video)
    assert any(sev == "error" and "broken.mp4" in msg for sev, msg in notifications)

    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"\x00garbage")
    dock.model_edit.setText(str(bad_ckpt))
    _segment(qtbot, dock)
    assert any(sev == "error" and "bad.pt" in msg for sev, msg in notifications)
    np.testing.assert_array_equal(labels.data, before)
    assert dock.run_button.isEnabled()

    dock.model_edit.setText(str(tmp_path / "missing.pt"))
    _segment(qtbot, dock)
    assert any(sev == "error" and "missing.pt" in msg for sev, msg in notifications)
    np.testing.assert_array_equal(labels.data, before)


def test_fine_tune_without_verified_frames_says_what_to_do(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint, notifications
):
    path, _, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    assert dock.start_finetune() is None
    assert any(sev == "error" and "verified" in msg for sev, msg in notifications)
    assert dock.finetune.start_button.isEnabled()


@pytest.mark.parametrize("kind", ["davis", "tiff"])
def test_export_writes_verified_frames(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint, tmp_path, kind
):
    from napari_diffseg.io import read

    path, frames, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    labels = labels_of(viewer, "run1")
    labels.paint((4, 30, 30), 1)
    dock.toggle_verified(4)
    target = tmp_path / ("export" if kind == "davis" else "labels.tif")
    out = dock.export(kind, target)
    assert out is not None
    if kind == "tiff":
        np.testing.assert_array_equal(read(out).frames, labels.data)
    else:
        video = read(out, sequence="run1")
        assert video.labelled == [4]
        np.testing.assert_array_equal(video.labels[4], labels.data[4])
        np.testing.assert_array_equal(video.frames, frames)


def test_an_undo_before_closing_is_saved_too(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint
):
    """napari's undo changes the labels without a paint event; closing still saves them."""
    path, _, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    labels = labels_of(viewer, "run1")
    before = np.array(labels.data[6])
    labels.paint((6, 32, 32), 3)
    assert not np.array_equal(labels.data[6], before)
    folder = path.parent / "run1.diffseg"
    qtbot.waitUntil(lambda: (folder / "state.json").is_file()
                    and 6 in _state(folder)["edited"], timeout=10_000)
    qtbot.waitUntil(lambda: dock.save_worker is None, timeout=10_000)
    labels.undo()
    np.testing.assert_array_equal(labels.data[6], before)
    viewer.close()

    viewer2 = make_napari_viewer()
    _dock(viewer2, path)
    np.testing.assert_array_equal(labels_of(viewer2, "run1").data[6], before)


def test_the_real_buttons_act_on_the_frame_on_screen(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint
):
    """Pressed with the mouse, not called: Qt's clicked(bool) once verified frame 0."""
    from qtpy.QtCore import Qt

    path, _, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    qtbot.mouseClick(dock.run_button, Qt.LeftButton)
    assert dock.segment_worker is not None
    qtbot.waitUntil(lambda: dock.segment_worker is None, timeout=WAIT_MS)
    assert len(dock.session.state.segmented) == 8
    dock.tabs.setCurrentWidget(dock.review)
    verify = dock.review.verify_button
    dock.go_to_frame(0)
    qtbot.mouseClick(verify, Qt.LeftButton)
    assert dock.session.state.verified == [0]
    dock.go_to_frame(3)
    qtbot.mouseClick(verify, Qt.LeftButton)  # verifies 3, leaves 0 as it was
    assert dock.session.state.verified == [0, 3]
    dock.go_to_frame(5)
    qtbot.mouseClick(verify, Qt.LeftButton)
    qtbot.mouseClick(verify, Qt.LeftButton)  # pressed twice: 5 verified, then not
    assert dock.session.state.verified == [0, 3]
    assert dict(dock.review.rows())[3] == "verified"
    # Next uncertain goes to the top unverified frame, not to frame 0 or 1
    expected = dock.session.next_uncertain(after=dock.current_frame())
    qtbot.mouseClick(dock.review.next_button, Qt.LeftButton)
    assert dock.current_frame() == expected
    # Segment + Cancel by mouse; a cancelled run leaves the verified frames verified
    dock.steps_spin.setValue(10)
    dock.samples_spin.setValue(16)
    qtbot.mouseClick(dock.run_button, Qt.LeftButton)
    assert dock.cancel_button.isEnabled()
    qtbot.mouseClick(dock.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.segment_worker is None, timeout=10_000)
    assert dock.run_button.isEnabled()
    assert dock.session.state.verified == [0, 3]


def test_every_push_button_is_connected_without_its_checked_flag():
    """Audit: no push button of the dock is wired to a slot that could take Qt's flag."""
    import ast
    from pathlib import Path

    import napari_diffseg.widgets as widgets

    for source in Path(widgets.__file__).parent.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr == "connect"
                    and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "clicked"):
                assert source.name == "_signals.py", (
                    f"{source.name}:{node.lineno} connects clicked directly; use on_click")


def _answer_with(monkeypatch, pattern):
    """The model's labels replaced by `pattern` (T, H, W); the rest of the run is real."""
    from dataclasses import replace

    import napari_diffseg.engine.pipeline as pipeline  # the dock segments through it

    real = pipeline.iter_segment

    def model_answer(*args, **kwargs):
        for chunk in real(*args, **kwargs):
            yield replace(chunk, labels=pattern[chunk.indices])

    monkeypatch.setattr(pipeline, "iter_segment", model_answer)


def _dock_on(viewer, qtbot, path, frames, pattern, checkpoint, monkeypatch):
    """A dock on the video `frames` (written to `path`) whose model answers `pattern`,
    after one segmentation of every frame."""
    tifffile.imwrite(path, np.clip(frames, 0, 255).astype(np.uint8))
    _answer_with(monkeypatch, pattern)
    dock = _dock(viewer, path, checkpoint)
    _segment(qtbot, dock)
    return dock


def _verify_as_given_and_resegment(viewer, qtbot, dock, name, pattern, frame):
    """The user sets `frame` to the model's first answer, verifies it and segments again:
    the frame keeps those labels. Returns the labels layer's data."""
    labels_of(viewer, name).data[frame] = pattern[frame]
    dock.toggle_verified(frame)
    _segment(qtbot, dock)
    labels = labels_of(viewer, name).data
    assert (labels[frame] == pattern[frame]).all()
    return labels


def test_segment_tracks_the_wire_but_not_over_a_verified_frame(
    make_napari_viewer, qtbot, tmp_path, tiny_checkpoint, monkeypatch
):
    """After the last frame the job runs the wire tracking over what it segmented; the
    dock writes the frames it changed, except the one the user verified. The model's answer
    is replaced by a known bolus pattern (wire seen in frames 0-1 and 6-7, covered by a
    vessel the model calls vessel in frames 2-5), over a video that shows it (the vessel
    darkens in frames 2-5 only, so the static-vessel step keeps it)."""
    pattern = np.zeros((8, 64, 64), np.uint8)
    pattern[:, 8:56, 30] = 3
    pattern[2:6, 8:56, 28:33] = 1
    frames = 180 + np.random.default_rng(0).normal(0, 3, pattern.shape)
    frames[:, 8:56, 30] -= 80
    frames[2:6, 8:56, 28:33] -= 60
    viewer = make_napari_viewer()
    dock = _dock_on(viewer, qtbot, tmp_path / "run1.tif", frames, pattern, tiny_checkpoint,
                    monkeypatch)
    labels = labels_of(viewer, "run1").data
    assert (labels[2:6, 8:56, 30] == 3).all()
    assert "guidewire kept under the contrast in 4 frames" in dock.seg_status.text()
    # the user verifies frame 3 as the model left it the first time (vessel over the wire)
    labels = _verify_as_given_and_resegment(viewer, qtbot, dock, "run1", pattern, 3)
    assert (labels[[2, 4, 5], 8:56, 30] == 3).all()
    # only the unverified frames are segmented (2, 4, 5 under the bolus): the wire the user
    # left in the verified frames 0, 1, 6 and 7 is the evidence that carries it into them
    for frame in (0, 1, 6, 7):
        dock.toggle_verified(frame)
    labels[[2, 4, 5]] = 0
    _segment(qtbot, dock, "unverified")
    labels = labels_of(viewer, "run1").data
    assert (labels[[2, 4, 5], 8:56, 30] == 3).all()
    assert (labels[3] == pattern[3]).all()


def test_segment_drops_vessel_the_frames_before_the_contrast_show_but_not_a_verified_one(
    make_napari_viewer, qtbot, tmp_path, tiny_checkpoint, monkeypatch
):
    """A lung marking the model calls vessel in every frame and a vessel that fills in
    frames 3-6: after the last frame the dock writes the marking as background and says so,
    except in the frame the user verified with it."""
    frames, pattern, _, _ = marking_and_bolus()
    viewer = make_napari_viewer()
    dock = _dock_on(viewer, qtbot, tmp_path / "run2.tif", frames, pattern, tiny_checkpoint,
                    monkeypatch)
    labels = labels_of(viewer, "run2").data
    assert not (labels[:, 20:24, 10:60] == 1).any()
    assert (labels[3:7, 60:68, 10:118] == 1).all()
    assert "before the contrast show as well removed in 10 frames" in dock.seg_status.text()
    # the user keeps the marking as vessel in frame 8 and verifies it: never changed again
    labels = _verify_as_given_and_resegment(viewer, qtbot, dock, "run2", pattern, 8)
    assert not (labels[[0, 5, 9], 20:24, 10:60] == 1).any()


def test_the_clean_up_switch_keeps_what_the_frames_before_the_contrast_show(
    make_napari_viewer, qtbot, tmp_path, tiny_checkpoint, monkeypatch
):
    """With "Clean-up" unticked (a video whose first frames already hold contrast) the
    static-vessel step is left out: the marking the model calls vessel stays vessel, the
    status says nothing of it; ticked again, the next segmentation drops it."""
    frames, pattern, _, _ = marking_and_bolus()
    viewer = make_napari_viewer()
    tifffile.imwrite(tmp_path / "run3.tif", np.clip(frames, 0, 255).astype(np.uint8))
    _answer_with(monkeypatch, pattern)
    dock = _dock(viewer, tmp_path / "run3.tif", tiny_checkpoint)
    assert dock.static_check.isChecked()  # on by default, as segment without --keep-static
    dock.static_check.setChecked(False)
    _segment(qtbot, dock)
    labels = labels_of(viewer, "run3").data
    assert (labels[:, 20:24, 10:60] == 1).all()
    assert "before the contrast" not in dock.seg_status.text()
    dock.static_check.setChecked(True)
    _segment(qtbot, dock)
    assert not (labels_of(viewer, "run3").data[:, 20:24, 10:60] == 1).any()
    assert "before the contrast show as well removed" in dock.seg_status.text()
