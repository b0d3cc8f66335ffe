"""Batches of random crops with weak (geometric) and strong (intensity) augmentation."""

from __future__ import annotations

import numpy as np
import torch


def crop_size_for(frames: list[np.ndarray], wanted: int, multiple: int) -> int:
    """Largest crop <= `wanted` that fits every frame and is a multiple of `multiple`."""
    smallest = min(min(f.shape[:2]) for f in frames)
    size = min(wanted, smallest) // multiple * multiple
    if size < multiple:
        raise ValueError(
            f"frames of {smallest} px are smaller than the network's minimum of {multiple} px"
        )
    return size


def random_crops(
    rng: np.random.Generator,
    images: list[np.ndarray],
    labels: list[np.ndarray] | None,
    batch: int,
    size: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Weakly augmented batch: random frame, random crop, random flips and 90° rotation.
    -> images (B, size, size) float32 and labels (B, size, size) int64 (or None)."""
    out_img = np.empty((batch, size, size), dtype=np.float32)
    out_lab = np.empty((batch, size, size), dtype=np.int64) if labels is not None else None
    for b in range(batch):
        i = int(rng.integers(len(images)))
        img = images[i]
        y = int(rng.integers(img.shape[0] - size + 1))
        x = int(rng.integers(img.shape[1] - size + 1))
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        patch = np.rot90(img[y : y + size, x : x + size], k)
        out_img[b] = patch[:, ::-1] if flip else patch
        if out_lab is not None:
            lab = np.rot90(labels[i][y : y + size, x : x + size], k)
            out_lab[b] = lab[:, ::-1] if flip else lab
    return out_img, out_lab


def strong_intensity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Strong photometric augmentation of (B, 1, H, W) normalised images: random gamma,
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
        k2 = (kernel[:, None] * kernel[None, :])[None, None]
        y = torch.nn.functional.conv2d(y, k2, padding=1)
    return y * 2 - 1
