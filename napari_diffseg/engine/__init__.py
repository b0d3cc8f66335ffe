"""The engine: inference, training (supervised and semi-supervised) and checkpoints.

Pure Python + torch, usable headless: the CLI and the napari widgets call these functions.

The names below are imported on first use (PEP 562), so that a torch-free submodule such as
:mod:`napari_diffseg.engine.defaults` can be imported without paying for torch: the dock opens
without importing torch on napari's event loop, and loads it in a worker thread instead.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Checkpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    "build_model": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "device_description": "device",
    "resolve_device": "device",
    "Cancelled": "inference",
    "Segmentation": "inference",
    "SegmentOptions": "inference",
    "segment": "inference",
    "TrainOptions": "training",
    "TrainProgress": "training",
    "TrainResult": "training",
    "train": "training",
}

__all__ = [
    "Cancelled",
    "Checkpoint",
    "CheckpointError",
    "SegmentOptions",
    "Segmentation",
    "TrainOptions",
    "TrainProgress",
    "TrainResult",
    "build_model",
    "device_description",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "segment",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs: the real imports
    from .checkpoint import (
        Checkpoint,
        CheckpointError,
        build_model,
        load_checkpoint,
        save_checkpoint,
    )
    from .device import device_description, resolve_device
    from .inference import Cancelled, Segmentation, SegmentOptions, segment
    from .training import TrainOptions, TrainProgress, TrainResult, train
