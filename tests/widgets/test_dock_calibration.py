"""The dock calibrates the model's probabilities on the video's verified frames before it
segments the others: the labels stay, the uncertainty follows the fitted temperature."""

from __future__ import annotations

import numpy as np
from conftest import labels_of
from test_workflow import _dock, _segment

from napari_diffseg.engine.calibration import fit_video_temperature
from napari_diffseg.engine.inference import load_for_inference, review_options
from napari_diffseg.widgets import _jobs


def _chunks(items):
    from napari_diffseg.engine.inference import SegmentChunk

    return [i for i in items if isinstance(i, SegmentChunk)]


def test_the_job_fits_the_temperature_and_keeps_the_labels(video_file, tiny_checkpoint):
    _, frames, truth = video_file
    for review in ("samples", "tta"):
        plain = list(_jobs.segment_job(tiny_checkpoint, frames, [4, 5, 6], review=review,
                                       steps=2, samples=2))
        verified = [1, 2]
        items = list(_jobs.segment_job(tiny_checkpoint, frames, [4, 5, 6], review=review,
                                       steps=2, samples=2,
                                       calibrate=(verified, truth[verified])))
        calibrated = [i for i in items if isinstance(i, _jobs.Calibrated)]
        assert len(calibrated) == 1 and calibrated[0].frames == verified
        # the temperature is the engine's fit on those frames with the same sampling
        model, ckpt = load_for_inference(tiny_checkpoint, "cpu")
        reference = np.zeros_like(truth)
        reference[verified] = truth[verified]
        expected = fit_video_temperature(
            model, frames, reference, verified, normalisation=ckpt.normalisation,
            timesteps=int(ckpt.schedule.get("timesteps", 10)),
            options=review_options(review, steps=2, samples=2, min_component=16))
        assert abs(calibrated[0].temperature - expected) < 1e-6
        assert calibrated[0].temperature != 1.0  # an untrained model is not calibrated
        # the labels are the uncalibrated run's; what the probabilities say is not
        np.testing.assert_array_equal(np.concatenate([c.labels for c in _chunks(items)]),
                                      np.concatenate([c.labels for c in _chunks(plain)]))
        assert not np.allclose(np.concatenate([c.entropy for c in _chunks(items)]),
                               np.concatenate([c.entropy for c in _chunks(plain)]))


def test_the_dock_calibrates_on_verified_frames(make_napari_viewer, qtbot, video_file,
                                                tiny_checkpoint):
    path, _, truth = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    assert "calibrated" not in dock.seg_status.text()  # nothing verified yet
    labels = labels_of(viewer, "run1")
    for frame in (2, 5):
        labels.data[frame] = truth[frame]
        dock.toggle_verified(frame)
    _segment(qtbot, dock, "unverified")
    temperature = dock.session.state.settings["temperature"]
    assert temperature > 0 and temperature != 1.0
    assert (f"calibrated on 2 verified frames (temperature {temperature:.2f})"
            in dock.seg_status.text())
