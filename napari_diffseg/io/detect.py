"""Format detection and the :func:`read` entry point that dispatches to the readers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .core import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    SUPPORTED_DESCRIPTION,
    TIFF_SUFFIXES,
    VIDEO_SUFFIXES,
    Video,
)
from .davis import is_davis_root, is_davis_sequence_dir, read_davis
from .davis import read_dataset as read_davis_dataset
from .dicom import has_dicom_magic, read_dicom
from .errors import ReadError
from .frames import has_image_files, read_frame_folder
from .mosxav import (
    is_mosxav_root,
    is_mosxav_sequence_dir,
    is_mosxav_split,
    read_mosxav,
    read_mosxav_dataset,
)
from .tiff import read_tiff
from .video import read_video

logger = logging.getLogger(__name__)

_READERS: dict[str, Callable[..., Video]] = {
    "video": read_video,
    "dicom": read_dicom,
    "tiff": read_tiff,
    "frames": read_frame_folder,
}


def detect_format(path: str | Path) -> str | None:
    """Guess the format of ``path`` cheaply, or ``None`` if it is not one we read.

    Files: by extension (video, DICOM, TIFF), else by the ``DICM`` marker at byte 128.
    Folders: ``"mosxav"`` for a MOSXAV split folder (``JPEGImages`` + ``Annotations_Semantic``,
    or ``ImageSets`` + ``labels.json``), one of its sequence folders or a download root holding
    ``trainval/`` and/or ``test/`` splits; ``"davis"`` for a dataset root or one of its
    sequence folders, ``"frames"`` if the folder holds image files.
    """
    try:
        path = Path(path)
        if path.is_dir():
            if is_mosxav_split(path) or is_mosxav_sequence_dir(path):
                return "mosxav"
            if is_davis_root(path) or is_davis_sequence_dir(path):
                return "davis"
            if is_mosxav_root(path):
                return "mosxav"
            return "frames" if has_image_files(path) else None
        if not path.is_file():
            return None
    except (TypeError, ValueError, OSError):
        return None
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in IMAGE_SUFFIXES:
        return None  # a single still image: not a video
    return "dicom" if has_dicom_magic(path) else None


def read(
    path: str | Path,
    *,
    keep_color: bool = False,
    sequence: str | None = None,
    annotations: str | None = None,
) -> Video:
    """Read a video from any supported source (see :data:`SUPPORTED_DESCRIPTION`).

    Returns a :class:`Video` with frames ``(T, H, W)`` (or ``(T, H, W, 3)`` with
    ``keep_color=True`` for colour sources). ``sequence`` picks a DAVIS or MOSXAV sequence
    (``"trainval/v07"`` in a MOSXAV download root); ``annotations`` (``"semantic"`` or
    ``"instance"``) picks MOSXAV's mask set. Raises :class:`ReadError` for anything that
    cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError(f"{path}: does not exist", path=path)
    fmt = detect_format(path)
    if fmt is None:
        if path.is_dir():
            problem = "is empty" if not any(path.iterdir()) else "contains no readable frames"
            raise ReadError(
                f"{path}: folder {problem}; supported: {SUPPORTED_DESCRIPTION}", path=path
            )
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise ReadError(
                f"{path}: a single {path.suffix} image is not a video; open the folder that "
                "holds the numbered frames instead",
                path=path,
            )
        kind = f"file type {path.suffix!r}" if path.suffix else "file without extension"
        raise ReadError(
            f"{path}: unsupported {kind}; supported: {SUPPORTED_DESCRIPTION}", path=path
        )
    logger.debug("reading %s as %s", path, fmt)
    if fmt == "mosxav":
        return read_mosxav(path, keep_color=keep_color, sequence=sequence, annotations=annotations)
    if annotations is not None:
        logger.warning("ignoring annotations=%r: %s is not a MOSXAV dataset", annotations, path)
    if fmt == "davis":
        return read_davis(path, keep_color=keep_color, sequence=sequence)
    if sequence is not None:
        logger.warning("ignoring sequence=%r: %s is not a DAVIS dataset", sequence, path)
    return _READERS[fmt](path, keep_color=keep_color)


def read_dataset(
    root: str | Path,
    *,
    keep_color: bool = False,
    split: str | None = None,
    annotations: str | None = None,
) -> list[Video]:
    """Read every sequence of a DAVIS root, or of a MOSXAV split folder / download root.

    For MOSXAV, ``split`` (``"train"``, ``"val"``, ``"test"``) keeps the sequences listed in
    ``ImageSets/<split>.txt`` and ``annotations`` picks ``"semantic"`` (default) or
    ``"instance"`` masks; both are errors for a DAVIS root.
    """
    root = Path(root)
    if is_mosxav_split(root) or is_mosxav_root(root):
        return read_mosxav_dataset(
            root, split=split, annotations=annotations, keep_color=keep_color
        )
    if split is not None or annotations is not None:
        raise ReadError(
            f"{root}: split= and annotations= apply to MOSXAV datasets only; this is not one",
            path=root,
        )
    return read_davis_dataset(root, keep_color=keep_color)


#: Folders whose children are single sequences of a DAVIS or MOSXAV dataset.
SEQUENCE_PARENTS = ("JPEGImages", "Annotations", "Annotations_Semantic")


def read_sequences(
    path: str | Path, *, split: str | None = None, keep_color: bool = False
) -> list[Video]:
    """Every sequence ``path`` holds: all sequences (of ``split``, MOSXAV only) of a DAVIS or
    MOSXAV dataset root or split folder, or ``[read(path)]`` for one sequence folder or any
    other source (video, DICOM, TIFF, frame folder)."""
    path = Path(path)
    if detect_format(path) in ("davis", "mosxav") and path.parent.name not in SEQUENCE_PARENTS:
        return read_dataset(path, keep_color=keep_color, split=split)
    return [read(path, keep_color=keep_color)]
