"""File readers and writers for napari-diffseg.

Readers return a :class:`Video` whose ``frames`` are ``(T, H, W)`` (T frames of H x W
pixels; ``(T, H, W, 3)`` for colour sources read with ``keep_color=True``) in the
source's dtype. Supported: MP4/AVI/MOV/GIF videos, (multi-frame) DICOM, TIFF stacks,
folders of numbered frames, DAVIS-style datasets with annotations and MOSXAV
downloads (semantic or instance masks, ImageSets splits). Bad input raises
:class:`ReadError`; writers raise :class:`WriteError` and replace files atomically.

This package imports no torch, Qt or napari.
"""

from ._atomic import atomic_path, check_writable_folder, os_reason, remove_stale_temps
from .core import FORMATS, SUPPORTED_DESCRIPTION, Video, VideoMetadata
from .davis import list_sequences, read_classes
from .detect import SEQUENCE_PARENTS, detect_format, read, read_dataset, read_sequences
from .errors import ReadError, WriteError
from .mosxav import MOSXAV_CLASSES, MOSXAV_COLORS, list_split, read_mosxav
from .palette import DEFAULT_PALETTE
from .writers import write_annotations, write_davis, write_float_maps, write_mosxav, write_tiff

__all__ = [
    "SEQUENCE_PARENTS",
    "read_sequences",
    "atomic_path",
    "check_writable_folder",
    "os_reason",
    "remove_stale_temps",
    "DEFAULT_PALETTE",
    "FORMATS",
    "MOSXAV_CLASSES",
    "MOSXAV_COLORS",
    "SUPPORTED_DESCRIPTION",
    "ReadError",
    "Video",
    "VideoMetadata",
    "WriteError",
    "detect_format",
    "list_sequences",
    "list_split",
    "read",
    "read_classes",
    "read_dataset",
    "read_mosxav",
    "write_annotations",
    "write_davis",
    "write_float_maps",
    "write_mosxav",
    "write_tiff",
]
