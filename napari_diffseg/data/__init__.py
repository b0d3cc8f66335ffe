"""Synthetic X-ray coronary angiography with exact pixel ground truth.

Stands in for clinical data (which cannot be shipped) in sample data, tests and
benchmarks. Pure numpy / scipy / PIL: no torch, Qt or napari imports.

>>> seq = generate_sequence(SyntheticConfig(size=128, frames=8, seed=1))
>>> seq.frames.shape, seq.labels.shape
((8, 128, 128), (8, 128, 128))
"""

from .config import DEFAULT_CLASSES, MOSXAV_SCHEME, SyntheticConfig
from .corrupt import CORRUPTIONS, corrupt_labels, corrupt_mask
from .dataset import make_dataset
from .mosxav import make_mosxav
from .preview import contact_sheet, overlay
from .synthetic import SyntheticSequence, generate_sequence

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_CLASSES",
    "MOSXAV_SCHEME",
    "SyntheticConfig",
    "SyntheticSequence",
    "contact_sheet",
    "corrupt_labels",
    "corrupt_mask",
    "generate_sequence",
    "make_dataset",
    "make_mosxav",
    "overlay",
]
