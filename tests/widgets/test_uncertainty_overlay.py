"""The uncertainty overlay: a colour no class has, one fixed scale, a colour bar (issue 16.2)."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
from conftest import CLASSES
from test_workflow import _dock, _segment

from napari_diffseg._layers import CLASS_COLORS
from napari_diffseg.io import DEFAULT_PALETTE, MOSXAV_COLORS


def _class_colours() -> dict[str, tuple[float, float, float]]:
    """Every colour a class can be drawn in: by name, MOSXAV's table, the DAVIS palette."""
    from napari.utils.colormaps.standardize_color import transform_color

    colours = {name: tuple(transform_color(hex_)[0][:3]) for name, hex_ in CLASS_COLORS.items()}
    colours |= {f"mosxav {i}": tuple(np.array(rgb) / 255) for i, rgb in MOSXAV_COLORS.items()
                if i}
    colours |= {f"davis {i}": tuple(DEFAULT_PALETTE[i] / 255) for i in range(1, 8)}
    return colours


def _hue_gap(a: float, b: float) -> float:
    """Distance in degrees between two hues in [0, 1)."""
    d = abs(a - b) * 360 % 360
    return min(d, 360 - d)


def test_overlay_scale_is_0_to_ln_c_before_and_after_reopening(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint
):
    path, _, _ = video_file
    expected = pytest.approx((0.0, math.log(len(CLASSES))))
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    unc = viewer.layers["run1 uncertainty"]
    assert tuple(unc.contrast_limits) == expected
    assert float(unc.data.max()) <= math.log(len(CLASSES)) + 1e-3  # entropy never exceeds ln C
    assert unc.colorbar.visible
    colormap = unc.colormap.name
    dock.save_now(force=True)
    viewer.close()

    viewer2 = make_napari_viewer()
    _dock(viewer2, path)
    unc2 = viewer2.layers["run1 uncertainty"]
    assert float(unc2.data.max()) > 0  # the saved map came back
    assert tuple(unc2.contrast_limits) == expected
    assert unc2.colormap.name == colormap
    assert unc2.colorbar.visible


def test_overlay_colours_resemble_no_class_colour(make_napari_viewer, video_file):
    """Every visible colour of the overlay (a quarter of the scale and up) has a hue at least
    30 degrees from every chromatic class colour, and its brightest colour is far from each."""
    path, _, _ = video_file
    viewer = make_napari_viewer()
    _dock(viewer, path)
    ramp = viewer.layers["run1 uncertainty"].colormap.map(np.linspace(0.25, 1.0, 32))[:, :3]
    for name, rgb in _class_colours().items():
        hue, saturation, value = colorsys.rgb_to_hsv(*rgb)
        if saturation < 0.25:
            continue  # grey: no hue to confuse
        for colour in ramp:
            ramp_hue = colorsys.rgb_to_hsv(*colour)[0]
            assert _hue_gap(hue, ramp_hue) >= 29.9, (name, rgb, colour)
        assert np.linalg.norm(ramp[-1] - np.array(rgb)) > 0.4, (name, rgb, ramp[-1])
