"""The review loop in a real viewer (issue 16, "missing for the review loop"): the class legend
and its keys, the to-do table, the navigation keys, the autosave indicator, the frame's status
on the canvas, the uncertainty strip and the playback speed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import labels_of
from qtpy.QtCore import QPoint, Qt
from test_workflow import PLUGIN, _dock, _segment

from napari_diffseg.widgets._legend import CLASS_KEYS
from napari_diffseg.widgets._review import (
    KEY_NEXT,
    KEY_NEXT_UNVERIFIED,
    KEY_PREVIOUS,
    KEY_VERIFY,
    STATUS_COLORS,
)


def _press(viewer, key: str) -> None:
    """A key pressed on napari's canvas, through Qt, vispy and napari's keymaps."""
    from napari.utils.key_bindings import KeyBinding

    handler = viewer.window._qt_viewer.canvas._key_map_handler
    assert handler.press_key(KeyBinding.from_str(key)), f"{key} did nothing"
    handler.release_key(KeyBinding.from_str(key))


@pytest.fixture
def segmented(make_napari_viewer, qtbot, video_file, tiny_checkpoint):
    path, _, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    dock.tabs.setCurrentWidget(dock.review)
    return viewer, dock, path


def test_our_keys_are_none_of_napari_s():
    from napari.components import ViewerModel
    from napari.layers import Labels
    from napari.utils.key_bindings import KeyBinding
    from napari.utils.shortcuts import default_shortcuts

    napari_keys = {KeyBinding.from_str(str(k)) for keys in default_shortcuts.values()
                   for k in keys}
    napari_keys |= set(Labels.class_keymap) | set(ViewerModel.class_keymap)
    ours = [KEY_NEXT, KEY_PREVIOUS, KEY_NEXT_UNVERIFIED, KEY_VERIFY, *CLASS_KEYS]
    assert len(set(ours)) == len(ours)
    clashes = [k for k in ours if KeyBinding.from_str(k) in napari_keys]
    assert not clashes, clashes


def test_the_legend_and_its_keys_choose_the_painting_class(qtbot, segmented):
    viewer, dock, _ = segmented
    labels = labels_of(viewer, "run1")
    legend = dock.review.legend
    assert sorted(legend.buttons) == [1, 2, 3]
    vessel = legend.buttons[1]
    assert "vessel" in vessel.text() and "F1" in vessel.text()
    # the swatch has the colour the labels layer paints the class with
    swatch = vessel.icon().pixmap(14, 14).toImage().pixelColor(7, 7)
    expected = labels.get_color(1)
    assert abs(swatch.redF() - expected[0]) < 0.02 and abs(swatch.greenF() - expected[1]) < 0.02

    qtbot.mouseClick(legend.buttons[2], Qt.LeftButton)
    assert labels.selected_label == 2
    assert legend.selected() == 2 and legend.buttons[2].font().bold()
    qtbot.mouseClick(legend.buttons[2], Qt.LeftButton)  # clicked again: still catheter
    assert labels.selected_label == 2 and legend.selected() == 2

    _press(viewer, "F3")
    assert labels.selected_label == 3 and legend.selected() == 3
    # napari's own label selector moves the legend too
    labels.selected_label = 1
    assert legend.selected() == 1


def _contrast(a, b) -> float:
    def luminance(c):
        def channel(v):
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
        return 0.2126 * channel(c.redF()) + 0.7152 * channel(c.greenF()) + \
            0.0722 * channel(c.blueF())
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_to_do_table_colours_and_navigation_keys(qtbot, segmented):
    viewer, dock, _ = segmented
    review, session = dock.review, dock.session
    for background, text in STATUS_COLORS.values():
        assert _contrast(background, text) >= 4.5
    review.todo_only.setChecked(True)
    ranking = session.state.ranking()

    _press(viewer, KEY_NEXT)  # U: the most uncertain frame (or the second if on it)
    first = dock.current_frame()
    assert first in ranking[:2]
    top = dock.current_frame()
    _press(viewer, KEY_NEXT)  # U again: one down the ranking
    assert ranking.index(dock.current_frame()) == ranking.index(top) + 1
    _press(viewer, KEY_PREVIOUS)  # Shift+U: back up
    assert dock.current_frame() == top

    # verifying with "to do only" on: the row leaves the table, its cell turns green
    qtbot.mouseClick(review.verify_button, Qt.LeftButton)
    assert top in session.state.verified
    assert top not in [f for f, _ in review.rows()] and len(review.rows()) == 7
    review.todo_only.setChecked(False)
    row = [f for f, _ in review.rows()].index(top)
    status = review.table.item(row, 2)
    assert status.text() == "verified"
    assert status.background().color() == STATUS_COLORS["verified"][0]
    review.todo_only.setChecked(True)

    # U after verifying goes on down the ranking, skipping the verified frame
    _press(viewer, KEY_NEXT)
    assert dock.current_frame() == session.step_uncertain(top, +1)

    # N: the next frame in time not verified, by key and by button
    dock.go_to_frame(top - 1 if top > 0 else 7)
    _press(viewer, KEY_NEXT_UNVERIFIED)
    assert dock.current_frame() == (top + 1) % 8
    qtbot.mouseClick(review.next_unverified_button, Qt.LeftButton)
    assert dock.current_frame() == (top + 2) % 8
    above = session.step_uncertain((top + 2) % 8, -1)
    qtbot.mouseClick(review.previous_button, Qt.LeftButton)
    assert dock.current_frame() == (above if above is not None else (top + 2) % 8)


def test_the_autosave_indicator_follows_the_saves(qtbot, segmented):
    viewer, dock, path = segmented
    qtbot.waitUntil(lambda: dock.save_label.text() == "saved", timeout=10_000)
    labels_of(viewer, "run1").paint((3, 10, 10), 2)
    assert dock.save_label.text() == "unsaved changes"
    # the save starts by itself ("saving…" may come and go between two polls on a busy
    # machine, so wait for the indicator to leave "unsaved changes", then for "saved")
    qtbot.waitUntil(lambda: dock.save_label.text() != "unsaved changes"
                    or dock.save_worker is not None, timeout=20_000)
    qtbot.waitUntil(lambda: dock.save_label.text() == "saved", timeout=20_000)
    assert (path.parent / "run1.diffseg" / "state.json").is_file()


def test_the_canvas_shows_the_frame_and_its_status(qtbot, segmented):
    viewer, dock, _ = segmented
    overlay = viewer.canvas.overlays.text
    assert viewer.dims.axis_labels[0] == "frame"
    dock.go_to_frame(3)
    assert overlay.visible and overlay.text == "frame 3 · proposed"
    dock.toggle_verified()
    assert overlay.text == "frame 3 · verified"
    dock.go_to_frame(4)
    labels_of(viewer, "run1").paint((4, 10, 10), 1)
    assert overlay.text == "frame 4 · edited"


def test_the_strip_shows_every_frame_and_jumps_where_clicked(qtbot, segmented):
    _, dock, _ = segmented
    strip = dock.review.strip
    strip.resize(400, 20)
    assert len(strip.scores) == 8 and all(s is not None for s in strip.scores)
    x = int(strip.width() * 6.5 / 8)
    qtbot.mouseClick(strip, Qt.LeftButton, pos=QPoint(x, 10))
    assert dock.current_frame() == 6 and strip.current == 6
    strip.grab()  # paints without error


def test_playback_runs_at_the_video_s_frame_rate(make_napari_viewer, qtbot, video_file):
    from napari._qt.widgets.qt_dims_slider import QtDimSliderWidget

    path, _, _ = video_file
    viewer = make_napari_viewer(show=True)
    viewer.open(str(path), plugin=PLUGIN)
    viewer.layers["run1"].metadata["fps"] = 12.5  # what the reader records for a cine
    viewer.window.add_plugin_dock_widget(PLUGIN, "Diffusion segmentation")

    def time_sliders():
        return [w for w in viewer.window._qt_window.findChildren(QtDimSliderWidget)
                if w.axis == 0]

    qtbot.waitUntil(lambda: time_sliders() and all(s.fps == 12 for s in time_sliders()),
                    timeout=2_000)


def test_frames_segmented_off_screen_show_when_visited(qtbot, segmented):
    """The layers are redrawn only for chunks holding the frame on screen (each redraw
    stalls the Qt thread); napari shows the others from the data when the user goes there."""
    import numpy as np

    viewer, dock, _ = segmented
    labels = labels_of(viewer, "run1")
    unc = viewer.layers["run1 uncertainty"]
    for frame in (5, 0, 7):
        dock.go_to_frame(frame)
        np.testing.assert_array_equal(np.asarray(labels._slice.image.raw), labels.data[frame])
        np.testing.assert_allclose(np.asarray(unc._slice.image.raw), unc.data[frame])


def test_undo_and_redo_save_like_painting_and_the_frame_state_follows(qtbot, segmented):
    """napari's undo/redo emit no paint event: they must still start the 2 s autosave, and a
    frame whose only stroke is undone is "proposed" again (redo: "edited")."""
    viewer, dock, path = segmented
    labels = labels_of(viewer, "run1")
    overlay = viewer.canvas.overlays.text
    state_file = path.parent / "run1.diffseg" / "state.json"

    def saved_edited():
        qtbot.waitUntil(lambda: dock.save_label.text() == "saved", timeout=10_000)
        return json.loads(state_file.read_text())["edited"]

    saved_edited()
    dock.go_to_frame(4)
    model_source = dock.session.state.label_source[4]
    assert model_source not in (None, "user")  # the model that segmented it
    before = np.array(labels.data[4])
    labels.paint((4, 10, 10), (int(before[10, 10]) + 1) % 4)
    assert 4 in saved_edited() and overlay.text == "frame 4 · edited"
    assert dock.session.state.label_source[4] == "user"

    labels.undo()
    np.testing.assert_array_equal(labels.data[4], before)
    assert dock.save_label.text() == "unsaved changes" and dock._autosave.isActive()
    assert 4 not in dock.session.state.edited and overlay.text == "frame 4 · proposed"
    assert dock.session.state.label_source[4] == model_source  # the model's labels again
    assert 4 not in saved_edited()

    labels.redo()
    assert dock.save_label.text() == "unsaved changes" and dock._autosave.isActive()
    assert 4 in dock.session.state.edited and overlay.text == "frame 4 · edited"
    assert dock.session.state.label_source[4] == "user"
    assert 4 in saved_edited()
    saved_labels = np.load(path.parent / "run1.diffseg" / "labels.npz")["labels"]
    np.testing.assert_array_equal(saved_labels[4], np.asarray(labels.data[4]))
