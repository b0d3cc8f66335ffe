"""How well an uncertainty map finds the label errors: the measures of the uncertainty benchmark.

Every function takes plain numpy arrays (no torch): a per-pixel *score* (any uncertainty map,
higher = more doubtful) and a boolean *error* mask (prediction != reference), or per-frame
scores and errors. Conventions:

* Ties are handled exactly: pixels with the same score are either all flagged or none
  (AUROC counts a tie between an error and a correct pixel as one half).
* A measure that has no defined value (no error pixel, no correct pixel, constant scores)
  is NaN, never a flattering 0 or 1.
* "Share of the error removed" by correcting a set of frames is the sum of their errors over
  the sum of all frames' errors (an error of a frame: its count of wrong pixels, or 1 − Dice).

Definitions follow the segmentation-uncertainty literature: UEO (uncertainty-error overlap,
Jungo & Reyes 2019) is the Dice between the thresholded map and the error mask, at the best
threshold; ECE bins the confidence (the probability of the predicted class) into equal-width
bins and averages |accuracy − confidence| weighted by the bins' pixel counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

_NAN = float("nan")


def _flat(score: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    score = np.asarray(score, dtype=np.float64).ravel()
    error = np.asarray(error, dtype=bool).ravel()
    if score.shape != error.shape:
        raise ValueError(f"score has {score.size} values but error has {error.size}")
    keep = np.isfinite(score)
    return score[keep], error[keep]


def _sorted_counts(score: np.ndarray, error: np.ndarray):
    """Distinct thresholds from high to low and, at each, (pixels flagged, errors flagged)
    when every pixel with a score >= the threshold is flagged."""
    order = np.argsort(-score, kind="stable")
    s, e = score[order], error[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    flagged = last_of_tie + 1
    errors = np.cumsum(e)[last_of_tie]
    return s[last_of_tie], flagged, errors


def pixel_auroc(score: np.ndarray, error: np.ndarray) -> float:
    """Area under the ROC curve of `score` as a detector of `error` (same shapes): the
    probability that a random error pixel scores above a random correct one (ties count 1/2).
    NaN without both kinds of pixel."""
    s, e = _flat(score, error)
    n_pos = int(e.sum())
    n_neg = e.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return _NAN
    ranks = stats.rankdata(s)  # average ranks: ties count one half
    return float((ranks[e].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pixel_auprc(score: np.ndarray, error: np.ndarray) -> float:
    """Average precision of `score` as a detector of `error`: Σ (recall_i − recall_{i−1})
    precision_i over the distinct thresholds (the step-wise area, as scikit-learn's
    average_precision_score). A random map scores the error rate. NaN without errors."""
    s, e = _flat(score, error)
    n_pos = int(e.sum())
    if n_pos == 0:
        return _NAN
    _, flagged, errors = _sorted_counts(s, e)
    precision = errors / flagged
    recall_gain = np.diff(np.r_[0, errors]) / n_pos
    return float((precision * recall_gain).sum())


def uncertainty_error_overlap(score: np.ndarray, error: np.ndarray) -> tuple[float, float]:
    """UEO: the largest Dice between {score >= threshold} and `error` over all thresholds,
    and that threshold. (NaN, NaN) without errors."""
    s, e = _flat(score, error)
    n_pos = int(e.sum())
    if n_pos == 0:
        return _NAN, _NAN
    thresholds, flagged, errors = _sorted_counts(s, e)
    dice = 2 * errors / (flagged + n_pos)
    best = int(np.argmax(dice))
    return float(dice[best]), float(thresholds[best])


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15,
    ignore_index: int | None = None,
) -> float:
    """ECE of class probabilities against reference labels.

    probabilities: (N, C, H, W) (or (C, H, W)) class probabilities; labels: (N, H, W) (or
    (H, W)) integer classes; pixels labelled `ignore_index` are left out. Confidence = the
    largest probability, correct = its class is the label; `bins` equal bins on [0, 1]."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim == y.ndim + 1 and p.ndim >= 3:
        p = np.moveaxis(p, -3, -1).reshape(-1, p.shape[-3])
    else:
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} do not match")
    y = y.reshape(-1)
    if p.shape[0] != y.size:
        raise ValueError(f"probabilities give {p.shape[0]} pixels but labels {y.size}")
    if ignore_index is not None:
        keep = y != ignore_index
        p, y = p[keep], y[keep]
    if y.size == 0:
        return _NAN
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return float(np.abs(acc_sum - conf_sum).sum() / y.size)


def spearman(score: Sequence[float], error: Sequence[float]) -> float:
    """Spearman rank correlation of two per-frame series; NaN when either is constant."""
    a = np.asarray(score, dtype=np.float64)
    b = np.asarray(error, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return _NAN
    return float(stats.spearmanr(a, b).statistic)


def frames_to_correct(n: int, fraction: float) -> int:
    """How many of n frames are "the top `fraction`": at least 1, rounded."""
    return max(1, int(round(fraction * n)))


def error_removed(errors: np.ndarray, order: np.ndarray, k: int) -> float:
    """Share of the total error removed by correcting (replacing with the reference) the
    frames order[:k]. errors: (T,) per-frame error (wrong pixels or 1 − Dice)."""
    errors = np.asarray(errors, dtype=np.float64)
    total = errors.sum()
    return float(errors[np.asarray(order)[:k]].sum() / total) if total > 0 else _NAN


@dataclass
class TriageResult:
    """Share of the error removed by correcting the top `fraction` of frames, by the score,
    by random choice (mean and std over draws; its expectation is k / T) and by the oracle
    (the frames with the largest error)."""

    fraction: float
    k: int
    by_score: float
    random_mean: float
    random_std: float
    oracle: float


def triage(
    scores: np.ndarray, errors: np.ndarray,
    fractions: Sequence[float] = (0.05, 0.10, 0.20),
    draws: int = 1000, seed: int = 0,
) -> list[TriageResult]:
    """For each fraction: the error removed by correcting that share of frames chosen by
    `scores` (highest first), at random and by the oracle. scores, errors: (T,)."""
    s = np.asarray(scores, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if s.shape != e.shape:
        raise ValueError(f"{s.size} scores for {e.size} frame errors")
    s = np.where(np.isfinite(s), s, -np.inf)
    n = e.size
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(n) for _ in range(draws)]
    by_score = np.argsort(-s, kind="stable")
    oracle = np.argsort(-e, kind="stable")
    out = []
    for fraction in fractions:
        k = frames_to_correct(n, fraction)
        random = [error_removed(e, p, k) for p in perms]
        out.append(TriageResult(
            fraction, k, error_removed(e, by_score, k), float(np.mean(random)),
            float(np.std(random)), error_removed(e, oracle, k),
        ))
    return out


def thin_mask(labels: np.ndarray, classes: Sequence[int], width: int = 3) -> np.ndarray:
    """Pixels of `classes` in `labels` (..., H, W) that belong to structures thinner than
    `width` pixels: those an opening with a width x width square removes (a guidewire, the
    distal end of a vessel)."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=bool)
    square = np.ones((width, width), dtype=bool)
    for index in np.ndindex(labels.shape[:-2]):
        for c in classes:
            mask = labels[index] == c
            if mask.any():
                out[index] |= mask & ~ndimage.binary_opening(mask, structure=square)
    return out


def missed_flagged(
    score: np.ndarray, missed: np.ndarray, flagged_share: float = 0.05
) -> float:
    """Share of the `missed` pixels (e.g. thin structures the prediction lost) among the
    `flagged_share` most uncertain pixels of `score` (the threshold is the score's
    (1 − flagged_share) quantile over all pixels, so every map flags as many pixels).
    NaN when nothing was missed."""
    s = np.asarray(score, dtype=np.float64)
    m = np.asarray(missed, dtype=bool)
    if s.shape != m.shape:
        raise ValueError(f"score shape {s.shape} but missed shape {m.shape}")
    if not m.any():
        return _NAN
    threshold = np.quantile(s, 1.0 - flagged_share)
    if not math.isfinite(threshold):
        return _NAN
    flagged = s >= threshold
    if flagged.mean() > 1.5 * flagged_share:  # a tie at the threshold: flag above it only
        flagged = s > threshold
    return float(flagged[m].mean())
