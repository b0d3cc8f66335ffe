"""Batches of random crops with weak (geometric) and strong (intensity) augmentation."""

from __future__ import annotations

import numpy as np
import torch


def crop_size_for(frames: list[np.ndarray], wanted: int, multiple: int) -> int:
    """Largest crop <= `wanted` that fits every frame and is a multiple of `multiple`."""
    smallest = min(min(f.shape[-2:]) for f in frames)
    size = min(wanted, smallest) // multiple * multiple
    if size < multiple:
        raise ValueError(
            f"frames of {smallest} px are smaller than the network's minimum of {multiple} px"
        )
    return size


def _crop_corner(
    rng: np.random.Generator, label: np.ndarray | None, shape: tuple[int, int], size: int,
    foreground: float, margin: float = 0.0,
) -> tuple[int, int]:
    """Top-left corner of a crop: uniform, or with probability `foreground` centred (up to a
    random offset) on a pixel of one foreground class of `label` drawn with equal odds per
    present class, so that a 0.2 %-of-pixels guidewire is cropped as often as the vessels.

    `margin` (a share of `size`): the uniform corner is drawn from a range that reaches that
    far past each side of the frame and is then clipped into it. With 0 a frame's outermost
    rows and columns are in a crop about `size` times less often than its centre (only the
    last corner position covers them); with 0.5 about half as often, so that a model trained
    on crops still learns what the image border (a collimator edge, the detector's rim)
    looks like."""
    h, w = shape
    if label is not None and foreground > 0 and rng.random() < foreground:
        present = [int(k) for k in np.unique(label[::4, ::4]) if k != 0]
        if present:
            k = present[int(rng.integers(len(present)))]
            where = np.flatnonzero(label == k)
            if where.size:
                cy, cx = divmod(int(where[int(rng.integers(where.size))]), w)
                cy += int(rng.integers(-size // 4, size // 4 + 1))
                cx += int(rng.integers(-size // 4, size // 4 + 1))
                return (int(np.clip(cy - size // 2, 0, h - size)),
                        int(np.clip(cx - size // 2, 0, w - size)))
    m = int(round(margin * size))
    return (int(np.clip(rng.integers(-m, h - size + m + 1), 0, h - size)),
            int(np.clip(rng.integers(-m, w - size + m + 1), 0, w - size)))


def crop_plan(
    rng: np.random.Generator,
    images: list[np.ndarray],
    labels: list[np.ndarray] | None,
    batch: int,
    size: int,
    foreground: float = 0.0,
    margin: float = 0.0,
) -> list[tuple[int, int, int, int, bool]]:
    """The random choices of a batch of crops: (frame, top, left, quarter turns, flip) each;
    `foreground` as in :func:`random_crops`, `margin` as in :func:`_crop_corner`. Apply them
    with :func:`apply_crops`."""
    plan = []
    for _ in range(batch):
        i = int(rng.integers(len(images)))
        y, x = _crop_corner(rng, labels[i] if labels is not None else None,
                            images[i].shape[-2:], size, foreground, margin)
        plan.append((i, y, x, int(rng.integers(4)), bool(rng.integers(2))))
    return plan


def apply_crops(plan, arrays: list, size: int, dtype, fill=0) -> np.ndarray:
    """Crop `arrays[i]` (..., H, W) as `plan` says -> (B, ..., size, size) of `dtype`; an
    entry of `arrays` that is None gives a crop full of `fill`."""
    shape = next((a.shape[:-2] for a in arrays if a is not None), ())
    out = np.full((len(plan), *shape, size, size), fill, dtype=dtype)
    for b, (i, y, x, k, flip) in enumerate(plan):
        if arrays[i] is None:
            continue
        patch = np.rot90(arrays[i][..., y : y + size, x : x + size], k, axes=(-2, -1))
        out[b] = patch[..., ::-1] if flip else patch
    return out


def random_crops(
    rng: np.random.Generator,
    images: list[np.ndarray],
    labels: list[np.ndarray] | None,
    batch: int,
    size: int,
    foreground: float = 0.0,
    margin: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Weakly augmented batch: random frame, random crop, random flips and 90° rotation.
    `foreground`: share of the crops centred on a labelled structure (see :func:`_crop_corner`),
    the rest uniform (`margin`: see :func:`_crop_corner`). images: each (H, W), or (K, H, W)
    stacks of a frame and its neighbours (cropped alike) -> images (B, size, size) or
    (B, K, size, size) float32 and labels (B, size, size) int64 (or None)."""
    plan = crop_plan(rng, images, labels, batch, size, foreground, margin)
    out_img = apply_crops(plan, images, size, np.float32)
    out_lab = apply_crops(plan, labels, size, np.int64) if labels is not None else None
    return out_img, out_lab


def strong_intensity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Strong photometric augmentation of (B, Cin, H, W) normalised images: random gamma,
    contrast and brightness, Gaussian noise and occasional blur; geometry is unchanged so that
    pseudo-labels computed on the weak view still align."""
    b = x.shape[0]
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        r = torch.rand((b, 1, 1, 1), generator=generator, device="cpu").to(dev)
        return lo + (hi - lo) * r

    y = ((x + 1) / 2).clamp(0, 1) ** u(0.7, 1.5)
    y = (y - 0.5) * u(0.7, 1.3) + 0.5 + u(-0.1, 0.1)
    noise = torch.randn(x.shape, generator=generator, device="cpu").to(dev)
    y = y + noise * u(0.0, 0.06)
    if torch.rand((), generator=generator) < 0.3:
        kernel = torch.tensor([0.25, 0.5, 0.25], device=dev)
        c = y.shape[1]  # the frame, and its neighbours for a model with temporal context
        k2 = (kernel[:, None] * kernel[None, :])[None, None].expand(c, 1, 3, 3)
        y = torch.nn.functional.conv2d(y, k2, padding=1, groups=c)
    return y * 2 - 1


def class_weights(labels: list[np.ndarray], num_classes: int, power: float = 0.5,
                  max_weight: float = 10.0) -> np.ndarray:
    """Cross-entropy weight per class (C,) from the labelled frames: (median frequency /
    frequency) ** power, clipped to [1/max_weight, max_weight] and normalised so that the
    background's weight is 1. power 0 gives all ones; 0.5 (default) lifts a class 100 times
    rarer than the background 10-fold. Classes absent from the data get weight 1."""
    counts = np.zeros(num_classes, dtype=np.float64)
    step = max(1, len(labels) // 200)  # a sample of the frames is enough for frequencies
    for lab in labels[::step]:
        counts += np.bincount(np.asarray(lab).reshape(-1), minlength=num_classes)[:num_classes]
    present = counts > 0
    weights = np.ones(num_classes, dtype=np.float64)
    if present.sum() > 1 and power > 0:
        freq = counts[present] / counts.sum()
        weights[present] = (freq[0] / freq) ** power if present[0] else 1.0 / freq ** power
        weights = np.clip(weights, 1.0 / max_weight, max_weight)
        weights /= weights[0] if present[0] else 1.0
    return weights.astype(np.float32)
