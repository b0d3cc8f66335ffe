"""Opening files from the dock and from File ▸ Open: messages, and which video the dock follows
(issue 16.3 and 16.5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import labels_of
from test_workflow import PLUGIN, _dock

from napari_diffseg.io import ReadError
from napari_diffseg.widgets._videos import same_layer


def test_a_broken_video_is_reported_problem_first_with_its_name(
    make_napari_viewer, video_file, notifications, tmp_path
):
    path, _, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path)
    folder = tmp_path / "a rather long folder name" / "that would fill a notification"
    folder.mkdir(parents=True)
    bad = folder / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    notifications.clear()

    dock.open_video(bad)
    errors = [msg for sev, msg in notifications if sev == "error"]
    assert len(errors) == 1, notifications
    (message,) = errors
    assert message.startswith("Could not be decoded as video"), message
    assert "truncated or corrupt" in message  # the plugin's own wording
    assert "broken.mp4" in message and str(folder) not in message
    assert "pyav" not in message.lower()
    assert "\n" not in message

    # File ▸ Open, once napari-diffseg is chosen as the reader, shows the same text
    with pytest.raises(ReadError) as info:
        viewer.open(str(bad), plugin=PLUGIN)
    assert str(info.value) == message


def _world_centre(layer) -> np.ndarray:
    return layer.extent.world[:, -2:].mean(axis=0)


def test_the_dock_follows_the_video_the_user_opens(
    make_napari_viewer, qtbot, video_file, make_dicom
):
    """A 12-frame DICOM cine with 0.2 x 0.3 mm pixels opened after an 8-frame 64 x 64 TIFF:
    the dock, the slider and the view move to the cine; the TIFF's work is saved and comes
    back when it is opened again."""
    path, _, _ = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path)
    labels_of(viewer, "run1").paint((2, 10, 10), 1)
    cine, _ = make_dicom("cine.dcm", n_frames=12)

    viewer.open(str(cine), plugin=PLUGIN)  # what File ▸ Open does once the reader is chosen
    qtbot.waitUntil(lambda: dock.session is not None and dock.session.name == "cine",
                    timeout=5_000)
    new = viewer.layers["cine"]
    assert dock.video_combo.currentText() == "cine"
    assert same_layer(dock.session.image, new)  # the dock sees napari's layer proxies
    assert viewer.dims.nsteps[0] == 12
    assert new.visible
    assert not any(layer.name.startswith("run1") for layer in viewer.layers)
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], _world_centre(new), atol=0.5)
    state = json.loads((path.parent / "run1.diffseg" / "state.json").read_text())
    assert 2 in state["edited"]

    dock.open_video(path)  # the dock's Open…: back to the TIFF, its correction restored
    qtbot.waitUntil(lambda: dock.session.name == "run1", timeout=5_000)
    assert viewer.dims.nsteps[0] == 8
    assert 2 in dock.session.state.edited
    assert labels_of(viewer, "run1").data[2, 10, 10] == 1
    assert "cine" not in viewer.layers
    np.testing.assert_allclose(viewer.scene.camera.center[-2:],
                               _world_centre(viewer.layers["run1"]), atol=0.5)
