"""The engine: inference, training (supervised and semi-supervised) and checkpoints.

Pure Python + torch, usable headless: the CLI and the napari widgets call these functions.
"""

from .checkpoint import Checkpoint, CheckpointError, build_model, load_checkpoint, save_checkpoint
from .device import device_description, resolve_device
from .inference import Cancelled, Segmentation, SegmentOptions, segment
from .training import TrainOptions, TrainProgress, TrainResult, train

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
