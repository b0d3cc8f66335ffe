"""The uncertainty benchmark's measures on hand-made examples whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_diffseg.engine.uncertainty_metrics import (
    expected_calibration_error,
    missed_flagged,
    pixel_auprc,
    pixel_auroc,
    spearman,
    thin_mask,
    triage,
    uncertainty_error_overlap,
)


def test_auroc_perfect_reversed_and_tied():
    error = np.array([0, 0, 1, 1], bool)
    assert pixel_auroc(np.array([0.1, 0.2, 0.8, 0.9]), error) == 1.0
    assert pixel_auroc(np.array([0.9, 0.8, 0.2, 0.1]), error) == 0.0
    assert pixel_auroc(np.full(4, 0.5), error) == 0.5  # ties count one half


def test_auroc_counts_pairs():
    # errors score 0.3 and 0.9; correct pixels 0.1, 0.5, 0.7: pairs won 1+3 out of 2*3
    score = np.array([0.1, 0.5, 0.7, 0.3, 0.9])
    error = np.array([0, 0, 0, 1, 1], bool)
    assert pixel_auroc(score, error) == pytest.approx(4 / 6)


def test_auroc_and_auprc_undefined_without_errors():
    assert math.isnan(pixel_auroc(np.arange(4.0), np.zeros(4, bool)))
    assert math.isnan(pixel_auprc(np.arange(4.0), np.zeros(4, bool)))


def test_auprc_known_values():
    error = np.array([1, 0, 1, 0], bool)
    # ranking: e(0.9) c(0.8) e(0.7) c(0.1): AP = 1/2 * 1 + 1/2 * 2/3
    assert pixel_auprc(np.array([0.9, 0.8, 0.7, 0.1]), error) == pytest.approx(0.5 + 1 / 3)
    assert pixel_auprc(np.array([0.9, 0.1, 0.8, 0.2]), error) == 1.0
    # a constant map scores the error rate
    assert pixel_auprc(np.zeros(4), error) == pytest.approx(0.5)


def test_ueo_finds_the_best_threshold():
    score = np.array([[0.9, 0.8], [0.4, 0.1]])
    error = np.array([[1, 1], [0, 0]], bool)
    ueo, threshold = uncertainty_error_overlap(score, error)
    assert ueo == 1.0 and threshold == pytest.approx(0.8)
    # one error below a correct pixel: best is flag 0.9 only (2/3) or down to 0.4 (4/5)
    ueo, threshold = uncertainty_error_overlap(np.array([0.9, 0.5, 0.4]),
                                               np.array([1, 0, 1], bool))
    assert ueo == pytest.approx(0.8) and threshold == pytest.approx(0.4)


def test_ece_of_calibrated_and_overconfident_maps():
    # 10 pixels, all predicted class 1 with confidence 0.8; 8 are right: calibrated
    probs = np.zeros((1, 2, 1, 10))
    probs[0, 1], probs[0, 0] = 0.8, 0.2
    labels = np.array([[[1] * 8 + [0] * 2]])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # the same pixels claimed at 1.0: off by 0.2 everywhere
    probs[0, 1], probs[0, 0] = 1.0, 0.0
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2)
    # ignored pixels do not count
    assert expected_calibration_error(probs, np.array([[[1] * 8 + [255] * 2]]),
                                      ignore_index=255) == pytest.approx(0.0)


def test_spearman_and_constant_series():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4]))


def test_triage_by_score_random_and_oracle():
    errors = np.array([10.0, 0, 0, 0, 0, 0, 0, 0, 0, 30])  # total 40
    scores = np.array([9.0, 1, 1, 1, 1, 1, 1, 1, 1, 0])  # ranks frame 0 first
    (r10,) = triage(scores, errors, fractions=(0.1,), draws=2000)
    assert r10.k == 1
    assert r10.by_score == pytest.approx(0.25)
    assert r10.oracle == pytest.approx(0.75)
    assert r10.random_mean == pytest.approx(0.1, abs=0.02)  # expectation k / T
    (r20,) = triage(scores, errors, fractions=(0.2,))
    assert r20.k == 2 and r20.oracle == pytest.approx(1.0)


def test_thin_mask_keeps_wires_not_blobs():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:12, 2:12] = 1  # a 10 px wide vessel
    labels[15, 2:18] = 1  # a 1 px wide distal branch
    labels[2:12, 16] = 2  # a guidewire
    thin = thin_mask(labels, [1, 2])
    assert thin[15, 2:18].all() and thin[2:12, 16].all()
    assert not thin[4:10, 4:10].any()


def test_missed_flagged_counts_missed_pixels_in_the_top_share():
    score = np.zeros((10, 10))
    score[0, :5] = 1.0  # the 5 % most uncertain pixels
    missed = np.zeros((10, 10), bool)
    missed[0, :4] = True  # 4 flagged
    missed[5, :4] = True  # 4 not flagged (score 0, tied with most of the frame)
    assert missed_flagged(score, missed, flagged_share=0.05) == pytest.approx(0.5)
    assert math.isnan(missed_flagged(score, np.zeros((10, 10), bool)))
