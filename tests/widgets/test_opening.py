"""Opening files from the dock and from File ▸ Open: messages, and which video the dock follows
(issue 16.3 and 16.5)."""

from __future__ import annotations

import pytest
from test_workflow import PLUGIN, _dock

from napari_diffseg.io import ReadError


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
