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
