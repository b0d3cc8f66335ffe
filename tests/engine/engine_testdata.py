"""Small generated videos and a tiny model config for the engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.io import Video, VideoMetadata
from napari_diffseg.model import ModelConfig

TINY = ModelConfig(
    width=16, depth=2, label_width=16, label_blocks=2, time_dim=32, denoiser_stride=1,
    encoder_stride=1
)


def synthetic_video(seed: int, frames: int = 20, size: int = 64, every: int = 5) -> Video:
    seq = generate_sequence(SyntheticConfig(size=size, frames=frames, seed=seed, guidewire=False))
    labelled = list(range(0, frames, every))
    labels = np.zeros_like(seq.labels)
    labels[labelled] = seq.labels[labelled]
    meta = VideoMetadata(Path(f"seq{seed}"), "davis", [f"{i:05d}" for i in range(frames)])
    return Video(seq.frames, meta, labels=labels, labelled=labelled, classes=seq.classes,
                 sequence=f"seq{seed}")


SHIFT = (2, -3)  # (dy, dx) per frame of shifted_video


def shifted_video(frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames, labels) of a 96 px video whose frame k is generated frame 0 moved by
    k * SHIFT (np.roll: wraps at the border), and its labels moved the same way."""
    seq = generate_sequence(SyntheticConfig(size=96, frames=1, seed=7))
    moved = [(k * SHIFT[0], k * SHIFT[1]) for k in range(frames)]
    return (np.stack([np.roll(seq.frames[0], m, axis=(0, 1)) for m in moved]),
            np.stack([np.roll(seq.labels[0], m, axis=(0, 1)) for m in moved]))


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of the foreground (label > 0) of two label maps."""
    a, b = a > 0, b > 0
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)
