"""Write a DAVIS-style dataset of synthetic angiography sequences."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import DEFAULT_CLASSES, SyntheticConfig
from .synthetic import generate_sequence

__all__ = ["make_dataset", "sequence_seeds"]

logger = logging.getLogger(__name__)


def sequence_seeds(seed: int, count: int) -> list[int]:
    """Seeds of ``count`` sequences derived from ``seed`` (prefix-stable: sequence i gets the
    same seed whatever ``count`` is)."""
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


def make_dataset(out: Path | str, *, sequences: int = 3, frames: int = 40,
                 size: int | tuple[int, int] = 256, label_every: int = 5, seed: int = 0,
                 difficulty: float = 0.5, writer: Callable[..., Any] | None = None) -> Path:
    """Generate ``sequences`` synthetic sequences and write them as a DAVIS-style tree.

    Layout: ``out/JPEGImages/seqNNN/NNNNN.png`` (all T frames, lossless PNG),
    ``out/Annotations/seqNNN/NNNNN.png`` (palette PNG label maps of frames 0,
    ``label_every``, 2 * ``label_every``, ...) and ``out/classes.json``.

    ``writer`` defaults to :func:`napari_diffseg.io.write_davis` (same signature).
    Returns ``out``.
    """
    if sequences < 1:
        raise ValueError(f"sequences must be >= 1, got {sequences}")
    if label_every < 1:
        raise ValueError(f"label_every must be >= 1, got {label_every}")
    if writer is None:
        from napari_diffseg.io import write_davis as writer
    out = Path(out)
    for i, s in enumerate(sequence_seeds(seed, sequences)):
        name = f"seq{i:03d}"
        config = SyntheticConfig(size=size, frames=frames, seed=s, difficulty=difficulty)
        seq = generate_sequence(config, name=name)
        writer(out, name, seq.labels, frames=list(range(0, frames, label_every)),
               classes=DEFAULT_CLASSES, images=seq.frames)
        logger.info("wrote %s (seed %d) to %s", name, s, out)
    return out
