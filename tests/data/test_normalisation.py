"""Percentile normalisation with the optional CLAHE step; old dicts keep working unchanged."""

from __future__ import annotations

import numpy as np

from napari_diffseg.data.sequences import DEFAULT_NORMALISATION, normalise_frames


def _frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    base = 60.0 + 120.0 * (xx / 63.0) + rng.normal(0.0, 3.0, (3, 64, 64))
    base[:, 30:34, :] -= 40.0  # a dark band
    return np.clip(base, 0, 255).astype(np.uint8)


def test_without_the_clahe_key_nothing_changes():
    old = {"method": "percentile", "low": 1.0, "high": 99.0}  # a checkpoint before CLAHE
    np.testing.assert_array_equal(normalise_frames(_frames(), old),
                                  normalise_frames(_frames(), DEFAULT_NORMALISATION))
    np.testing.assert_array_equal(normalise_frames(_frames(), {**old, "clahe": None}),
                                  normalise_frames(_frames(), old))


def test_clahe_equalises_locally_within_range():
    frames = _frames()
    plain = normalise_frames(frames, DEFAULT_NORMALISATION)
    eq = normalise_frames(frames, {**DEFAULT_NORMALISATION, "clahe": 0.01})
    assert eq.shape == plain.shape and eq.dtype == np.float32
    assert eq.min() >= -1.0 and eq.max() <= 1.0
    # the left-right ramp is flattened: column means spread less than before
    assert eq.mean(axis=(0, 1)).std() < plain.mean(axis=(0, 1)).std()
    # the dark band stays darker than the rows around it
    assert eq[:, 30:34].mean() < eq[:, 20:26].mean()
