"""The DAVIS / PASCAL VOC label palette."""

from __future__ import annotations

import numpy as np


def davis_palette(n: int = 256) -> np.ndarray:
    """Return the ``(n, 3)`` uint8 DAVIS palette (0 black, 1 red, 2 green, 3 yellow, ...).

    Bits 0, 1 and 2 of each id feed the most significant bits of R, G and B; the next
    three bits the next most significant bits, and so on.
    """
    ids = np.arange(n, dtype=np.int64)
    palette = np.zeros((n, 3), dtype=np.int64)
    for level in range(8):
        shift = 7 - level
        for channel in range(3):
            bit = (ids >> (3 * level + channel)) & 1
            palette[:, channel] |= bit << shift
    return palette.astype(np.uint8)


DEFAULT_PALETTE: np.ndarray = davis_palette()
DEFAULT_PALETTE.flags.writeable = False
