"""Sampling: reproducible for a seed, uncertainty where samples disagree, any frame size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_testdata import TINY

from napari_diffseg.engine.inference import (
    Cancelled,
    SegmentOptions,
    segment,
    uncertainty_from_samples,
)
from napari_diffseg.model import DiffSegNet, ModelConfig

NORM = {"method": "percentile", "low": 1.0, "high": 99.0}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DiffSegNet(ModelConfig(**{**TINY.to_dict(), "num_classes": 3})).eval()


def _frames(t=3, h=40, w=52):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (t, h, w), dtype=np.uint8)


def test_segment_shapes_any_size_and_dtype(model):
    frames = _frames(h=40, w=52).astype(np.uint16) * 200  # not multiples of 4; 16-bit
    seg = segment(model, frames, normalisation=NORM, timesteps=10,
                  options=SegmentOptions(steps=2, samples=3, batch_size=2))
    assert seg.probabilities.shape == (3, 3, 40, 52)
    assert seg.labels.shape == (3, 40, 52) and seg.labels.dtype == np.uint8
    assert seg.entropy.shape == seg.mutual_information.shape == (3, 40, 52)
    assert seg.frame_scores.shape == (3,)
    np.testing.assert_allclose(seg.probabilities.astype(np.float32).sum(axis=1), 1, atol=5e-3)
    assert np.all(seg.mutual_information >= 0)
    assert np.all(seg.mutual_information <= seg.entropy + 1e-5)


def test_segment_is_reproducible_for_a_seed(model):
    frames = _frames()
    opts = SegmentOptions(steps=2, samples=2, seed=3)
    a = segment(model, frames, normalisation=NORM, timesteps=10, options=opts)
    b = segment(model, frames, normalisation=NORM, timesteps=10, options=opts)
    c = segment(model, frames, normalisation=NORM, timesteps=10,
                options=SegmentOptions(steps=2, samples=2, seed=4))
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert not np.array_equal(a.probabilities, c.probabilities)


def test_mutual_information_is_high_where_samples_disagree():
    agree = torch.tensor([0.9, 0.1])
    samples = torch.empty(1, 4, 2, 2, 2)
    samples[..., 0] = agree[None, None, :, None]  # column 0: all samples say class 0
    samples[0, :2, :, :, 1] = torch.tensor([0.9, 0.1])[:, None]  # column 1: 2 vs 2
    samples[0, 2:, :, :, 1] = torch.tensor([0.1, 0.9])[:, None]
    mean, entropy, mi = uncertainty_from_samples(samples)
    assert mi[0, :, 0].abs().max() < 1e-6
    assert mi[0, :, 1].min() > 0.3
    assert torch.all(entropy[0, :, 1] > entropy[0, :, 0])
    assert torch.allclose(mean[0, :, :, 1], torch.full((2, 2), 0.5))


def test_segmentation_can_be_cancelled(model):
    calls = []
    with pytest.raises(Cancelled):
        segment(model, _frames(t=6), normalisation=NORM, timesteps=10,
                options=SegmentOptions(steps=1, samples=1, batch_size=2),
                progress=lambda done, total: calls.append(done),
                should_stop=lambda: len(calls) >= 1)
    assert calls == [2]
