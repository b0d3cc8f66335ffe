"""Temperature scaling: an over-confident softmax gets T > 1 and becomes calibrated."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffseg.engine.calibration import (
    apply_temperature,
    calibration_frames,
    fit_temperature,
    nll,
)
from napari_diffseg.engine.uncertainty_metrics import expected_calibration_error


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _calibrated_and_labels(n=20, c=3, h=32, w=32, seed=0):
    """True probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, c, h, w))
    true = _softmax(logits)
    u = rng.random((n, 1, h, w))
    labels = (u > np.cumsum(true, axis=1)).sum(axis=1)
    return logits, true, labels


def test_overconfident_softmax_gets_temperature_above_one():
    logits, true, labels = _calibrated_and_labels()
    overconfident = _softmax(logits * 3.0)  # the same argmax, three times too sure
    t = fit_temperature(overconfident, labels)
    assert 2.4 < t < 3.6  # recovers the factor 3
    calibrated = apply_temperature(overconfident, t)
    assert nll(calibrated, labels) < nll(overconfident, labels)
    assert expected_calibration_error(calibrated, labels) < 0.5 * expected_calibration_error(
        overconfident, labels)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), overconfident.argmax(axis=1))


def test_calibrated_and_underconfident():
    logits, true, labels = _calibrated_and_labels(seed=1)
    assert fit_temperature(true, labels) == pytest.approx(1.0, abs=0.15)
    assert fit_temperature(_softmax(logits * 0.5), labels) < 0.7  # under-confident: T < 1


def test_ignored_pixels_and_validation():
    probs = np.full((1, 2, 4, 4), 0.5)
    assert fit_temperature(probs, np.full((1, 4, 4), 255), ignore_index=255) == 1.0
    with pytest.raises(ValueError, match="do not match"):
        fit_temperature(probs, np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(probs, 0)


def test_fit_video_temperature_on_verified_frames():
    import torch
    from engine_testdata import TINY

    from napari_diffseg.engine.inference import SegmentOptions, segment
    from napari_diffseg.model import DiffSegNet, ModelConfig

    torch.manual_seed(0)
    net = DiffSegNet(ModelConfig(**{**TINY.to_dict(), "num_classes": 3})).eval()
    frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32), dtype=np.uint8)
    norm = {"method": "percentile", "low": 1.0, "high": 99.0}
    opts = SegmentOptions(steps=1, samples=1)
    from napari_diffseg.engine.calibration import fit_video_temperature

    own = segment(net, frames, normalisation=norm, timesteps=10, options=opts).labels
    # its own answers are always right: sharpen (T < 1); random answers: soften (T > 1)
    assert fit_video_temperature(net, frames, own, [0, 2], normalisation=norm, timesteps=10,
                                 options=opts) < 1.0
    noise = np.random.default_rng(1).integers(0, 3, own.shape)
    t_noise = fit_video_temperature(net, frames, noise, [1, 3], normalisation=norm,
                                    timesteps=10, options=opts)
    assert t_noise > 1.0
    assert fit_video_temperature(net, frames, own, [], normalisation=norm, timesteps=10) == 1.0


def test_calibration_frames_are_spread_over_the_verified_ones():
    assert calibration_frames([]) == []
    assert calibration_frames([7, 2]) == [2, 7]
    assert calibration_frames(list(range(0, 40, 5))) == [0, 10, 25, 35]
    assert len(calibration_frames(list(range(100)), most=4)) == 4
