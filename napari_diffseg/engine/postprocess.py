"""Label clean-up after sampling: isolated specks of a class become background.

A diffusion sample scatters a few pixels of vessel or guidewire on background texture; such
specks are far from any true structure and dominate the Hausdorff distance (HD95) while adding
nothing a user would keep. Numpy + scikit-image only.
"""

from __future__ import annotations

import inspect

import numpy as np
from skimage.morphology import remove_small_objects

#: scikit-image >= 0.26 names the threshold max_size (removes sizes <= max_size), older ones
#: min_size (removes sizes < min_size)
_MAX_SIZE = "max_size" in inspect.signature(remove_small_objects).parameters

#: Frame area the minimum component size is quoted at (512 x 512, MOSXAV's frame size).
REFERENCE_AREA = 512 * 512


def min_component_pixels(min_component: int, shape: tuple[int, int]) -> int:
    """`min_component` pixels at 512 x 512, scaled to a frame of `shape` (at least 1)."""
    return max(1, round(min_component * shape[0] * shape[1] / REFERENCE_AREA))


def remove_specks(labels: np.ndarray, min_component: int) -> np.ndarray:
    """labels (H, W) or (T, H, W) uint8 -> the same with every 8-connected component of a
    foreground class smaller than `min_component` pixels (quoted at 512 x 512, scaled to the
    frame's area) set to background 0. 0 leaves the labels as they are. A new array."""
    out = np.array(labels, copy=True)
    if min_component <= 0:
        return out
    frames = out.reshape(-1, *out.shape[-2:])
    size = min_component_pixels(min_component, frames.shape[-2:])
    for frame in frames:
        for k in np.unique(frame):
            if k == 0:
                continue
            mask = frame == k
            if _MAX_SIZE:
                kept = remove_small_objects(mask, max_size=size - 1, connectivity=2)
            else:
                kept = remove_small_objects(mask, min_size=size, connectivity=2)
            frame[mask & ~kept] = 0
    return out
