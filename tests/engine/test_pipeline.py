"""engine.pipeline.segment_video: calibrate, segment, then the whole-video step with the
user's frames as evidence. The segmentation is replaced by a fixed answer here (the real one
runs in the dock's and the CLI's tests), so that what the sequence does with it is exact."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_diffseg.engine import pipeline
from napari_diffseg.engine.calibration import Calibrated, calibration_frames
from napari_diffseg.engine.inference import SegmentOptions
from napari_diffseg.engine.postprocess import VideoCleanup

CLASSES = {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}
T, SIZE = 8, 64


def _answer() -> np.ndarray:
    """What the fake model labels in every frame: a horizontal vessel, no wire."""
    labels = np.zeros((T, SIZE, SIZE), np.uint8)
    labels[:, 28:36, 4:60] = 1
    return labels


@pytest.fixture
def fake_model(monkeypatch):
    """Replace the sampling and the temperature fit; record what they were asked."""
    seen = {"temperatures": [], "fitted_on": None}
    answer = _answer()

    def fake_iter_segment(model, frames, *, normalisation, timesteps, options, indices,
                          should_stop=None):
        for i in indices:
            seen["temperatures"].append(options.temperature)
            yield SimpleNamespace(indices=np.array([i]), labels=answer[[i]])

    def fake_fit(model, frames, labels, verified, **kwargs):
        seen["fitted_on"] = list(verified)
        return 1.7

    monkeypatch.setattr(pipeline, "iter_segment", fake_iter_segment)
    monkeypatch.setattr(pipeline, "fit_video_temperature", fake_fit)
    return seen


def _run(**kwargs):
    frames = np.full((T, SIZE, SIZE), 128, np.uint8)
    return list(pipeline.segment_video(None, frames, classes=CLASSES, normalisation={},
                                       timesteps=10, options=SegmentOptions(), **kwargs))


def test_calibrates_on_spread_verified_frames_then_segments_with_that_temperature(fake_model):
    verified = [0, 1, 2, 4, 5, 7]
    labels = _answer()[verified]
    items = _run(indices=[3, 6], verified=(verified, labels))
    assert isinstance(items[0], Calibrated)
    assert items[0].temperature == 1.7
    assert items[0].frames == calibration_frames(verified) == fake_model["fitted_on"]
    assert len(items[0].frames) == 4
    assert fake_model["temperatures"] == [1.7, 1.7]
    assert [int(c.indices[0]) for c in items[1:3]] == [3, 6]
    assert isinstance(items[-1], VideoCleanup)
    # without verified frames: no fit, temperature 1
    fake_model["temperatures"].clear()
    items = _run(indices=[3, 6])
    assert not any(isinstance(i, Calibrated) for i in items)
    assert fake_model["temperatures"] == [1.0, 1.0]


def test_a_wire_the_user_drew_is_carried_and_the_users_frames_are_never_changed(fake_model):
    mine = _answer()[0].copy()
    mine[31:33, 10:50] = 3  # the wire the user painted in the vessel of frames 0 and 7
    inner = range(1, T - 1)
    plain = _run(indices=inner)
    assert isinstance(plain[-1], VideoCleanup) and plain[-1].changed == {}  # nothing to do
    kept = np.zeros((T, SIZE, SIZE), np.uint8)  # the caller's labels: written, not copied
    items = _run(indices=inner, user_labels=([0, T - 1], np.stack([mine, mine])), labels=kept)
    np.testing.assert_array_equal(kept[list(inner)], _answer()[list(inner)])
    np.testing.assert_array_equal(kept[[0, T - 1]], np.stack([mine, mine]))
    done = items[-1]
    assert isinstance(done, VideoCleanup)
    assert sorted(done.changed) == list(inner)  # the wire carried under the "contrast"
    for frame in done.changed.values():
        assert ((frame == 3) & (mine == 3)).sum() >= 0.9 * (mine == 3).sum()
        assert not ((frame == 3) & (_answer()[0] == 0)).any()  # only inside the vessel


def test_no_whole_video_step_after_a_stop_or_without_its_classes(fake_model):
    calls = {"n": 0}

    def stop_after_segmenting():
        calls["n"] += 1
        return calls["n"] > 1  # the first poll (after calibrating) says go on

    items = _run(verified=([0], _answer()[[0]]), should_stop=stop_after_segmenting)
    assert isinstance(items[0], Calibrated)
    assert not any(isinstance(i, VideoCleanup) for i in items)
    assert len(items) == 1 + T
    items = list(pipeline.segment_video(
        None, np.zeros((T, SIZE, SIZE), np.uint8), classes={0: "background", 1: "catheter"},
        normalisation={}, timesteps=10, options=SegmentOptions()))
    assert len(items) == T and not any(isinstance(i, VideoCleanup) for i in items)
