"""Coloured label overlays and contact sheets of sequences (for docs and eyeballing)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .synthetic import SyntheticSequence

__all__ = ["CLASS_COLOURS", "contact_sheet", "overlay"]

logger = logging.getLogger(__name__)

#: RGB colour per class name.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "vessel": (230, 50, 40),
    "catheter": (40, 210, 80),
    "guidewire": (250, 225, 30),
}
_FALLBACK = [(60, 140, 255), (230, 60, 230), (40, 220, 220), (255, 140, 0)]


def overlay(frames: np.ndarray, labels: np.ndarray, classes: dict[int, str],
            alpha: float = 0.45) -> np.ndarray:
    """Blend class colours over gray frames.

    ``frames`` (T, H, W) or (H, W) uint8, ``labels`` of the same shape; returns
    (T, H, W, 3) (or (H, W, 3)) uint8. Background (id 0) is left gray.
    """
    gray = np.asarray(frames)
    lab = np.asarray(labels)
    if gray.shape != lab.shape:
        raise ValueError(f"frames {gray.shape} and labels {lab.shape} differ in shape")
    rgb = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    extra = iter(_FALLBACK * 4)
    for cid, cname in sorted(classes.items()):
        if cid == 0:
            continue
        colour = CLASS_COLOURS.get(cname) or next(extra)
        mask = lab == cid
        if mask.any():
            rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(colour, np.float32)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def contact_sheet(seq: SyntheticSequence, frame_indices: Sequence[int], path: Path | str,
                  gap: int = 4) -> Path:
    """Save a PNG with raw frames (top row) and label overlays (bottom row).

    ``frame_indices`` selects frames of ``seq.frames`` (T, H, W); returns the path written.
    """
    path = Path(path)
    idx = [int(i) for i in frame_indices]
    if not idx:
        raise ValueError("frame_indices is empty")
    raw = seq.frames[idx]
    over = overlay(raw, seq.labels[idx], seq.classes)
    n, h, w = raw.shape
    sheet = np.full((2 * h + gap, n * w + (n - 1) * gap, 3), 255, np.uint8)
    for k in range(n):
        x = k * (w + gap)
        sheet[:h, x:x + w] = raw[k][..., None]
        sheet[h + gap:, x:x + w] = over[k]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path)
    logger.info("contact sheet of %s frames %s -> %s", seq.name, idx, path)
    return path
