"""Propagating a corrected frame along the video's motion (numpy + scikit-image only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from engine_testdata import mask_dice as dice
from engine_testdata import shifted_video

from napari_diffseg.engine.propagate import (
    PropagateOptions,
    PropagationCancelled,
    fuse,
    propagate,
    propagation_plan,
    threshold,
)


@pytest.fixture(scope="module")
def shifted():
    """A 5-frame 96 px video whose frame k is generated frame 0 moved by k * SHIFT, and its
    labels moved the same way."""
    frames, labels = shifted_video(5)
    assert (labels[0] > 0).sum() > 100
    return frames, labels


@pytest.mark.parametrize("method", ["tvl1", "ilk"])
def test_propagation_follows_a_known_shift(shifted, method):
    frames, truth = shifted
    labels = np.zeros_like(truth)
    labels[0] = truth[0]  # only the corrected frame is known
    out = propagate(frames, labels, 0, options=PropagateOptions(frames=3, direction="forward",
                                                                method=method))
    assert [p.index for p in out] == [1, 2, 3]
    inner = (slice(12, -12), slice(12, -12))  # away from np.roll's wrapped border
    for p in out:
        assert p.labels.dtype == np.uint8 and p.uncertainty is None
        got = dice(p.labels[inner], truth[p.index][inner])
        still = dice(truth[0][inner], truth[p.index][inner])
        assert got > 0.85 and got > still + 0.1, (p.index, got, still)


def test_a_kept_frame_is_never_written_and_the_chain_goes_on_from_it(shifted):
    frames, truth = shifted
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    labels[2] = truth[2]  # the user's verified frame
    before = labels.copy()
    out = propagate(frames, labels, 0, options=PropagateOptions(frames=4, direction="forward"),
                    keep=[2])
    assert [p.index for p in out] == [1, 3, 4]
    np.testing.assert_array_equal(labels, before)  # the input is not modified
    assert out[1].previous == 2


def test_backward_and_both_directions_stay_inside_the_video():
    options = PropagateOptions(frames=3, direction="both")
    assert propagation_plan(1, 10, options) == [(2, 1), (3, 2), (4, 3), (0, 1)]
    assert propagation_plan(9, 10, PropagateOptions(frames=2, direction="backward")) == \
        [(8, 9), (7, 8)]


def test_fusion_keeps_the_confident_model_and_lowers_uncertainty_where_they_agree(shifted):
    frames, truth = shifted
    c = 4
    model = truth.copy()
    model[1, :48] = 0  # the model misses the top half of frame 1 …
    entropy = np.full(truth.shape, 0.05, np.float32)
    entropy[1, :48] = math.log(c)  # … and is unsure there
    labels = np.zeros_like(truth)
    labels[0] = truth[0]
    out = propagate(frames, labels, 0,
                    options=PropagateOptions(frames=1, direction="forward"),
                    model_labels=model, uncertainty=entropy, num_classes=c)
    (p,) = out
    bottom = (slice(48, -12), slice(12, -12))
    np.testing.assert_array_equal(p.labels[bottom], model[1][bottom])  # confident: the model
    top = (slice(12, 46), slice(12, -12))
    assert dice(p.labels[top], truth[1][top]) > 0.8  # unsure: the warped labels
    assert p.uncertainty.shape == truth.shape[1:]
    assert (p.uncertainty <= entropy[1] + 1e-6).all()
    # where the warped vessel is one the model missed, the doubt stays; where they agree
    # (most of the frame), it falls to a quarter
    missed = (p.labels != model[1])
    assert missed.any() and np.allclose(p.uncertainty[missed], math.log(c))
    assert np.median(p.uncertainty[bottom]) == pytest.approx(0.05 * 0.25)
    assert 0 < p.agreement < 1


def test_fuse_threshold():
    warped = np.array([[1, 1]], np.uint8)
    model = np.array([[2, 2]], np.uint8)
    entropy = np.array([[0.0, math.log(4)]], np.float32)
    np.testing.assert_array_equal(fuse(warped, model, entropy, 4, 0.5), [[2, 1]])
    # near the corrected frame the warped labels need a surer model to be overridden
    options = PropagateOptions(confidence=0.5, decay=0.7)
    assert threshold(options, 1) == pytest.approx(0.85)
    assert threshold(options, 5) == pytest.approx(0.5 + 0.5 * 0.7 ** 5)
    assert threshold(PropagateOptions(decay=0.0), 1) == 0.5


def test_cancel_and_bad_arguments(shifted):
    frames, truth = shifted
    with pytest.raises(PropagationCancelled):
        propagate(frames, truth, 0, should_stop=lambda: True)
    with pytest.raises(ValueError, match="outside the video"):
        propagate(frames, truth, 9)
    with pytest.raises(ValueError, match="uncertainty"):
        propagate(frames, truth, 0, model_labels=truth)
    with pytest.raises(ValueError, match="direction"):
        PropagateOptions(direction="sideways")
