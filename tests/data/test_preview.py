"""Tests of the overlay / contact-sheet helpers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_diffseg.data import DEFAULT_CLASSES, contact_sheet, overlay


def test_overlay_colours_classes_and_keeps_background():
    frames = np.full((2, 8, 10), 100, np.uint8)
    labels = np.zeros((2, 8, 10), np.uint8)
    labels[0, 1, 1], labels[0, 2, 2], labels[1, 3, 3] = 1, 2, 3
    rgb = overlay(frames, labels, DEFAULT_CLASSES, alpha=0.5)
    assert rgb.shape == (2, 8, 10, 3) and rgb.dtype == np.uint8
    assert (rgb[labels == 0] == 100).all()
    vessel, catheter, wire = rgb[0, 1, 1], rgb[0, 2, 2], rgb[1, 3, 3]
    assert vessel[0] > vessel[1] and vessel[0] > vessel[2]  # red-ish
    assert catheter[1] > catheter[0] and catheter[1] > catheter[2]  # green-ish
    assert wire[0] > wire[2] and wire[1] > wire[2]  # yellow-ish


def test_overlay_shape_mismatch():
    with pytest.raises(ValueError):
        overlay(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 5), np.uint8), DEFAULT_CLASSES)


def test_contact_sheet(seq_with_wire, tmp_path):
    path = contact_sheet(seq_with_wire, [0, 12, 23], tmp_path / "sheet.png")
    with Image.open(path) as im:
        assert im.mode == "RGB"
        assert im.size == (3 * 96 + 2 * 4, 2 * 96 + 4)
        sheet = np.asarray(im)
    np.testing.assert_array_equal(sheet[:96, :96, 0], seq_with_wire.frames[0])
