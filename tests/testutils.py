"""Shared constants and array builders for the tests (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from napari_diffseg.io import DEFAULT_PALETTE

T, H, W = 8, 32, 48
SQUARE = 8
BACKGROUND, FOREGROUND = 30, 220
XA_STORAGE = "1.2.840.10008.5.1.4.1.1.12.1"


def square_origin(t: int) -> tuple[int, int]:
    """Top-left (row, col) of the bright square in frame t: it moves 4 px right per frame."""
    return 12, 4 + 4 * t


def moving_square(n: int = T, dtype: type = np.uint8, fg: int = FOREGROUND) -> np.ndarray:
    """``(n, H, W)`` frames: dark background, one bright square moving right."""
    frames = np.full((n, H, W), BACKGROUND, dtype=dtype)
    for t in range(n):
        r, c = square_origin(t)
        frames[t, r : r + SQUARE, c : c + SQUARE] = fg
    return frames


def centroid(frame: np.ndarray) -> tuple[float, float]:
    """(row, col) centroid of the pixels brighter than the midpoint."""
    rows, cols = np.nonzero(frame > (BACKGROUND + FOREGROUND) / 2)
    return float(rows.mean()), float(cols.mean())


def label_frames(n: int = T) -> np.ndarray:
    """``(n, H, W)`` uint8 labels: 1 = the moving square, 2 = a fixed bar."""
    labels = (moving_square(n) == FOREGROUND).astype(np.uint8)
    labels[:, 2:5, 5:40] = 2
    return labels


def save_palette_png(path: Path, ids: np.ndarray) -> None:
    image = Image.fromarray(ids.astype(np.uint8))
    image.putpalette(DEFAULT_PALETTE.tobytes())
    assert image.mode == "P"
    image.save(path)


def marking_and_bolus(size: int = 128, frames: int = 10, contrast=range(3, 7)):
    """A video with a dark marking (lung marking, clip, catheter) in every frame and a vessel
    that darkens in the `contrast` frames only, and the labels a model that calls both
    vessel where they show would give: (frames float (T, S, S), labels, marking, lumen)."""
    rng = np.random.default_rng(0)
    video = 180 + rng.normal(0, 3, (frames, size, size))
    marking = np.zeros((size, size), bool)
    marking[20:24, 10:60] = True
    lumen = np.zeros((size, size), bool)
    lumen[60:68, 10:118] = True
    labels = np.zeros((frames, size, size), np.uint8)
    for t in range(frames):
        video[t][marking] -= 50
        labels[t][marking] = 1
        if t in contrast:
            video[t][lumen] -= 60
            labels[t][lumen] = 1
    return video, labels, marking, lumen
