"""Data containers shared by every reader, plus naming helpers."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: ``source_format`` values, in the order they are documented.
FORMATS = ("video", "dicom", "tiff", "frames", "davis", "mosxav")

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".gif"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

SUPPORTED_DESCRIPTION = (
    "video files (.mp4, .avi, .mov, .gif), DICOM files (.dcm, .dicom, or any file with a "
    "'DICM' header), TIFF stacks (.tif, .tiff), folders of numbered frames "
    "(.png, .jpg, .jpeg, .tif, .tiff, .bmp) and DAVIS-style datasets "
    "(<root>/JPEGImages/<sequence>/, optional <root>/Annotations/<sequence>/) and MOSXAV "
    "downloads (<root>/{trainval,test}/JPEGImages/, Annotations_Semantic/, ImageSets/)"
)

logger = logging.getLogger("napari_diffseg.io")

_DIGITS = re.compile(r"([0-9]+)")


@dataclass
class VideoMetadata:
    """Where a video came from and what is known about it.

    Attributes:
        path: The path that was opened.
        source_format: One of :data:`FORMATS` (``"video"`` ... ``"davis"``, ``"mosxav"``).
        frame_names: One stem per frame (length T): file stems for frame folders and DAVIS
            sequences, ``"00000"``, ``"00001"``, ... for videos, DICOM and TIFF.
        fps: Frames per second where known.
        spacing: ``(row, col)`` pixel spacing in mm where known (DICOM).
        extra: Further JSON-serialisable details (never patient identifiers).
    """

    path: Path
    source_format: str
    frame_names: list[str]
    fps: float | None = None
    spacing: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Video:
    """A video as an array plus metadata (and annotations for DAVIS sequences).

    Attributes:
        frames: ``(T, H, W)`` grey frames, or ``(T, H, W, 3)`` RGB when read with
            ``keep_color=True`` from a colour source; the source's dtype is kept.
        meta: Where the frames came from.
        labels: DAVIS only: ``(T, H, W)`` label ids (uint8, or uint16 when an id exceeds
            255); 0 on frames without an annotation file.
        labelled: Indices of frames that have an annotation file.
        classes: Label id -> class name from ``classes.json``, or ``None``.
        sequence: DAVIS sequence name.
    """

    frames: np.ndarray
    meta: VideoMetadata
    labels: np.ndarray | None = None
    labelled: list[int] = field(default_factory=list)
    classes: dict[int, str] | None = None
    sequence: str | None = None


def natural_sort_key(name: str) -> tuple[list[Any], str]:
    """Sort key that orders embedded numbers numerically (``2.png`` before ``10.png``).

    Splitting on a capturing digit group alternates text and number chunks, so the
    compared lists always hold the same types at the same positions.
    """
    parts: list[Any] = _DIGITS.split(name.casefold())
    parts[1::2] = [int(p) for p in parts[1::2]]
    return parts, name


def natural_sorted(names: list[str]) -> list[str]:
    """Return ``names`` in natural order."""
    return sorted(names, key=natural_sort_key)


def default_frame_names(n: int) -> list[str]:
    """Zero-padded frame names ``"00000"``, ``"00001"``, ... for ``n`` frames."""
    return [f"{i:05d}" for i in range(n)]


def is_hidden(path: Path) -> bool:
    """True for dot-files (also our temporary files, which start with a dot)."""
    return path.name.startswith(".")


def numbered_video(
    frames: np.ndarray,
    path: Path,
    source_format: str,
    *,
    fps: float | None = None,
    spacing: tuple[float, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Video:
    """A :class:`Video` from a single-file source whose frames are named ``00000``, ``00001``…

    Logs the shape read, as every reader does.
    """
    logger.info("read %s %s: %s %s", source_format, path, frames.shape, frames.dtype)
    meta = VideoMetadata(
        path=path,
        source_format=source_format,
        frame_names=default_frame_names(frames.shape[0]),
        fps=fps,
        spacing=spacing,
        extra=extra or {},
    )
    return Video(frames=frames, meta=meta)
