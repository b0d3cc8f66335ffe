"""Reader for folders of numbered image frames (``1.png``, ``2.png``, ... ``10.png``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from ._stack import FrameStack
from .core import (
    IMAGE_SUFFIXES,
    SUPPORTED_DESCRIPTION,
    Video,
    VideoMetadata,
    is_hidden,
    natural_sort_key,
)
from .errors import ReadError, check_file, decode_errors

logger = logging.getLogger(__name__)


def list_image_files(folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Non-hidden files in ``folder`` with one of ``suffixes`` (any case), naturally sorted."""
    wanted = {s.lower() for s in suffixes}
    files = [
        p
        for p in folder.iterdir()
        if not is_hidden(p) and p.suffix.lower() in wanted and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def has_image_files(folder: Path) -> bool:
    """Cheap check: does ``folder`` directly contain at least one supported image file?"""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                suffix = os.path.splitext(entry.name)[1].lower()
                if not entry.name.startswith(".") and suffix in IMAGE_SUFFIXES:
                    if entry.is_file():
                        return True
    except OSError:
        return False
    return False


def read_image(path: Path) -> np.ndarray:
    """Read one image file as ``(H, W)`` or ``(H, W, C)`` with its stored dtype."""
    path = check_file(path)
    with decode_errors(path, "an image"):
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) != 1:
                    raise ReadError(
                        f"{path}: has {len(tif.pages)} pages; a frame folder needs one image "
                        "per file (read a multi-page TIFF directly instead)",
                        path=path,
                    )
                return tif.asarray()
        return iio.imread(path, plugin="pillow", index=0)


def check_unique_stems(files: list[Path]) -> list[str]:
    """Return the file stems, raising :class:`ReadError` if two files share a stem."""
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ReadError(
                f"{path}: frame name {path.stem!r} is also used by {seen[path.stem].name}; "
                "each frame needs a unique name",
                path=path,
            )
        seen[path.stem] = path
    return list(seen)


def stack_image_files(files: list[Path], *, keep_color: bool = False) -> np.ndarray:
    """Read image files into one ``(T, H, W)`` (or ``(T, H, W, 3)``) array.

    Raises :class:`ReadError` naming the first file whose size or dtype differs from the
    first frame's.
    """
    stack = FrameStack(keep_color=keep_color, capacity=len(files))
    for path in files:
        stack.add(read_image(path), path)
    return stack.result()


def read_frame_folder(path: str | Path, *, keep_color: bool = False) -> Video:
    """Read a folder of frames in natural order into ``(T, H, W)`` frames.

    Hidden files, sub-folders and non-image files are ignored; ``frame_names`` are the
    file stems. All frames must share size and dtype (16-bit PNGs stay uint16).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ReadError(f"{folder}: does not exist or is not a folder", path=folder)
    files = list_image_files(folder)
    if not files:
        raise ReadError(
            f"{folder}: folder contains no image files; supported: {SUPPORTED_DESCRIPTION}",
            path=folder,
        )
    names = check_unique_stems(files)
    frames = stack_image_files(files, keep_color=keep_color)
    logger.info("read %d frames from %s: %s %s", len(files), folder, frames.shape, frames.dtype)
    return Video(
        frames=frames,
        meta=VideoMetadata(
            path=folder,
            source_format="frames",
            frame_names=names,
            extra={"suffixes": sorted({p.suffix.lower() for p in files})},
        ),
    )
