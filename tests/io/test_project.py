"""The annotation project: corrections and verified frames survive a save/load round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_diffseg.io import ReadError, WriteError
from napari_diffseg.io.project import (
    ProjectState,
    has_project,
    load_project,
    project_dir_for,
    save_project,
)


def _state(t=4, h=8, w=10, **kw):
    return ProjectState(video="v.mp4", sequence="v", shape=(t, h, w),
                        classes={0: "background", 1: "vessel"}, **kw)


def test_project_dir_sits_next_to_the_video(tmp_path):
    assert project_dir_for(tmp_path / "run1.mp4") == tmp_path / "run1.diffseg"
    seq = tmp_path / "data" / "JPEGImages" / "seq3"
    assert project_dir_for(seq) == tmp_path / "data" / "seq3.diffseg"
    folder = tmp_path / "frames"
    folder.mkdir()
    assert project_dir_for(folder) == tmp_path / "frames.diffseg"


def test_round_trip_keeps_labels_verified_and_scores(tmp_path):
    labels = np.zeros((4, 8, 10), np.uint8)
    labels[1, 2:5, 3:6] = 1
    unc = np.random.default_rng(0).random((4, 8, 10)).astype(np.float32)
    state = _state(verified=[1], edited=[1, 2], segmented=[0, 1, 2, 3],
                   frame_scores=[0.1, 0.5, None, 0.3])
    save_project(tmp_path / "p", state, labels, unc)
    assert has_project(tmp_path / "p")
    back, lab, u = load_project(tmp_path / "p", expected_shape=(4, 8, 10))
    np.testing.assert_array_equal(lab, labels)
    np.testing.assert_allclose(u, unc, atol=1e-3)
    assert back.verified == [1] and back.edited == [1, 2]
    assert back.frame_scores == [0.1, 0.5, None, 0.3]
    assert back.classes == {0: "background", 1: "vessel"}
    assert back.ranking() == [1, 3, 0, 2]
    assert back.ranking(unverified_only=True) == [3, 0, 2]
    # the verified frame is a DAVIS annotation our reader opens
    ann = tmp_path / "p" / "Annotations" / "v" / "00001.png"
    assert ann.is_file()
    np.testing.assert_array_equal(np.asarray(Image.open(ann)), labels[1])


def test_unverifying_removes_the_annotation(tmp_path):
    labels = np.ones((4, 8, 10), np.uint8)
    save_project(tmp_path, _state(verified=[0, 2]), labels)
    assert sorted(p.name for p in (tmp_path / "Annotations" / "v").glob("*.png")) == [
        "00000.png", "00002.png"]
    save_project(tmp_path, _state(verified=[2]), labels, changed=[])
    assert [p.name for p in (tmp_path / "Annotations" / "v").glob("*.png")] == ["00002.png"]


def test_only_changed_frames_are_rewritten(tmp_path):
    labels = np.ones((4, 8, 10), np.uint8)
    save_project(tmp_path, _state(verified=[0, 2]), labels)
    png = tmp_path / "Annotations" / "v" / "00000.png"
    before = png.stat().st_mtime_ns
    labels[2] = 0
    save_project(tmp_path, _state(verified=[0, 2]), labels, changed=[2])
    assert png.stat().st_mtime_ns == before
    assert np.asarray(Image.open(tmp_path / "Annotations" / "v" / "00002.png")).max() == 0


def test_none_keeps_saved_arrays(tmp_path):
    labels = np.full((4, 8, 10), 1, np.uint8)
    save_project(tmp_path, _state(), labels, np.ones((4, 8, 10)))
    save_project(tmp_path, _state(verified=[3]), None, None)
    state, lab, unc = load_project(tmp_path)
    assert state.verified == [3] and lab is not None and unc is not None


def test_project_of_another_video_is_refused(tmp_path):
    save_project(tmp_path, _state(), np.zeros((4, 8, 10), np.uint8))
    with pytest.raises(ReadError, match="shape"):
        load_project(tmp_path, expected_shape=(5, 8, 10))


def test_corrupt_state_names_the_file(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ReadError, match="state.json"):
        load_project(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({**_state().to_json(), "version": 99}))
    with pytest.raises(ReadError, match="newer"):
        load_project(tmp_path)


def test_wrong_label_shape_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(WriteError, match="shape"):
        save_project(tmp_path / "p", _state(), np.zeros((3, 8, 10), np.uint8))
    assert not has_project(tmp_path / "p")
