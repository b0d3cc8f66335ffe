"""Label noise for the noisy-label benchmarks: corrupt a fraction of the labelled masks the way
hurried or automatic annotation goes wrong.

Four kinds of corruption, applied to integer label maps (0 = background):

* ``"morph"``: every foreground class eroded or dilated (disk of radius 1-2 px): borders too
  tight or too loose;
* ``"shift"``: the whole foreground moved by a few pixels (frame-to-frame motion the annotator
  did not follow), background fills the uncovered pixels;
* ``"swap"``: one foreground class relabelled as another (catheter painted as vessel, ...);
* ``"drop_thin"``: thin structures removed: the pixels of a class that a morphological opening
  (disk of radius 1) takes away, i.e. distal vessels, guidewires, narrow branches.

Numpy / scipy / scikit-image only, deterministic given a :class:`numpy.random.Generator`.

    rng = np.random.default_rng(0)
    noisy, changed = corrupt_labels(labels, 0.3, rng)  # labels (N, H, W) or a list of (H, W)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import dilation, disk, erosion, opening

__all__ = ["CORRUPTIONS", "corrupt_labels", "corrupt_mask"]

#: The kinds of corruption :func:`corrupt_mask` draws from.
CORRUPTIONS: tuple[str, ...] = ("morph", "shift", "swap", "drop_thin")


def _morph(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Erode or dilate each foreground class (one draw of erode/dilate and radius per mask)."""
    out = mask.copy()
    erode = bool(rng.integers(2))
    footprint = disk(int(rng.integers(1, 3)))
    classes = [c for c in np.unique(mask) if c != 0]
    if erode:
        for c in classes:
            region = mask == c
            out[region & ~erosion(region, footprint)] = 0
    else:
        for c in classes:  # dilate into the background only, in class order
            grown = dilation(mask == c, footprint)
            out[grown & (out == 0)] = c
    return out


def _shift(mask: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Move every foreground pixel by (dy, dx), 1 <= max(|dy|, |dx|) <= max_shift."""
    while True:
        dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
        if dy or dx:
            break
    h, w = mask.shape
    out = np.zeros_like(mask)
    src = mask[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def _swap(mask: np.ndarray, rng: np.random.Generator, num_classes: int) -> np.ndarray:
    """Relabel one present foreground class as another foreground class."""
    present = [int(c) for c in np.unique(mask) if c != 0]
    source = present[int(rng.integers(len(present)))]
    targets = [c for c in range(1, num_classes) if c != source]
    if not targets:
        return mask.copy()
    out = mask.copy()
    out[mask == source] = targets[int(rng.integers(len(targets)))]
    return out


def _drop_thin(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Remove the thin parts of every foreground class (what an opening with disk(1) removes);
    for each class, small leftover fragments (< 5 px) of the thin part are kept as they are."""
    del rng  # deterministic; the signature matches the other corruptions
    out = mask.copy()
    for c in (c for c in np.unique(mask) if c != 0):
        region = mask == c
        thin = region & ~opening(region, disk(1))
        labelled, n = ndimage.label(thin, structure=np.ones((3, 3)))
        if n:
            sizes = ndimage.sum_labels(thin, labelled, index=np.arange(1, n + 1))
            big = np.concatenate([[False], sizes >= 5])
            out[big[labelled]] = 0
    return out


def corrupt_mask(
    mask: np.ndarray,
    rng: np.random.Generator,
    kinds: Sequence[str] = CORRUPTIONS,
    *,
    max_shift: int = 3,
    num_classes: int | None = None,
    max_kinds: int = 2,
) -> tuple[np.ndarray, list[str]]:
    """Corrupt one label map.

    Args:
        mask: (H, W) integer class ids, 0 = background.
        rng: the random generator (same generator state, same result).
        kinds: corruptions to draw from (see :data:`CORRUPTIONS`).
        max_shift: largest shift in pixels for ``"shift"``.
        num_classes: C, background included, for ``"swap"`` (default: ``max(mask) + 1``, at
            least 3 so that a single foreground class can still be swapped).
        max_kinds: 1 to this many different kinds are applied, in random order.

    Returns:
        (corrupted (H, W) of ``mask``'s dtype, the kinds applied). A mask with no foreground is
        returned unchanged with no kinds; a drawn corruption that leaves the mask unchanged
        (e.g. nothing thin to drop) is replaced by the next kind that changes it.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) label map, got shape {mask.shape}")
    unknown = set(kinds) - set(CORRUPTIONS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {CORRUPTIONS}, got {kinds!r}")
    if not (mask != 0).any():
        return mask.copy(), []
    c = num_classes if num_classes is not None else max(int(mask.max()) + 1, 3)
    count = int(rng.integers(1, min(max_kinds, len(kinds)) + 1))
    order = [kinds[i] for i in rng.permutation(len(kinds))]
    out, applied = mask, []
    for kind in order:
        if len(applied) == count or not (out != 0).any():
            break
        if kind == "morph":
            new = _morph(out, rng)
        elif kind == "shift":
            new = _shift(out, rng, max_shift)
        elif kind == "swap":
            new = _swap(out, rng, c)
        else:
            new = _drop_thin(out, rng)
        if not np.array_equal(new, out):
            out = new
            applied.append(kind)
    return out.astype(mask.dtype, copy=False), applied


def corrupt_labels(
    labels: np.ndarray | Sequence[np.ndarray],
    fraction: float,
    rng: np.random.Generator,
    kinds: Sequence[str] = CORRUPTIONS,
    *,
    max_shift: int = 3,
    num_classes: int | None = None,
) -> tuple[list[np.ndarray], list[int]]:
    """Corrupt ``round(fraction * N)`` of N label maps, chosen at random among those with
    foreground (a background-only mask cannot be corrupted by these kinds).

    Args:
        labels: (N, H, W) array or a list of N (H, W) integer label maps (sizes may differ).
        fraction: in [0, 1], of all N masks.
        rng: the random generator; the same state gives the same choice and corruptions.
        kinds, max_shift, num_classes: passed to :func:`corrupt_mask`.

    Returns:
        (a new list of N (H, W) label maps, the indices of the masks that were changed). The
        input is not modified.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    maps = [np.asarray(m) for m in labels]
    candidates = [i for i, m in enumerate(maps) if (m != 0).any()]
    wanted = min(int(round(fraction * len(maps))), len(candidates))
    chosen = (
        sorted(int(i) for i in rng.choice(candidates, size=wanted, replace=False)) if wanted else []
    )
    out = [m.copy() for m in maps]
    changed = []
    for i in chosen:
        out[i], applied = corrupt_mask(
            maps[i], rng, kinds, max_shift=max_shift, num_classes=num_classes
        )
        if applied:
            changed.append(i)
    return out, changed
