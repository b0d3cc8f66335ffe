"""Speck removal keeps structures and drops isolated pixels of a class."""

from __future__ import annotations

import numpy as np

from napari_diffseg.engine.postprocess import min_component_pixels, remove_specks


def test_specks_go_and_thin_long_structures_stay():
    labels = np.zeros((2, 128, 128), np.uint8)
    labels[:, 10:110, 64] = 3        # a 1 px wide, 100 px long wire: one component
    labels[:, 40:44, 20:24] = 1      # a 16 px vessel speck
    labels[1, 90:93, 90:93] = 2      # a 9 px catheter speck
    out = remove_specks(labels, min_component=400)  # 400 px at 512² = 25 px at 128²
    assert (out[:, 10:110, 64] == 3).all()
    assert not (out == 1).any() and not (out == 2).any()
    assert (remove_specks(labels, 0) == labels).all()
    assert labels[0, 41, 21] == 1  # the input is not modified


def test_the_threshold_scales_with_the_frame_area():
    assert min_component_pixels(64, (512, 512)) == 64
    assert min_component_pixels(64, (1024, 1024)) == 256
    assert min_component_pixels(64, (64, 64)) == 1
