"""Reader for multi-page TIFF stacks."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ._stack import rgb_stack_to_gray
from .core import Video, numbered_video
from .errors import ReadError, check_file, decode_errors

logger = logging.getLogger(__name__)

#: tifffile reports these problems as log warnings and then returns partial data.
_CORRUPTION_HINTS = ("invalid page offset", "failed to reshape", "truncat", "corrupt")


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_warnings() -> Iterator[list[str]]:
    """Collect the warnings tifffile logs while the block runs."""
    recorder = _Recorder()
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addHandler(recorder)
    try:
        yield recorder.messages
    finally:
        tiff_logger.removeHandler(recorder)


def read_tiff(path: str | Path, *, keep_color: bool = False) -> Video:
    """Read a TIFF stack into ``(T, H, W)`` frames of the stored dtype.

    A single page ``(H, W)`` gives ``(1, H, W)``; extra leading axes (time, z, channel
    pages) are flattened into T. Colour samples ``(..., 3|4)`` become grey unless
    ``keep_color`` (then ``(T, H, W, 3)``, alpha dropped).
    """
    path = check_file(path)
    with _tifffile_warnings() as warnings, decode_errors(path, "TIFF"):
        with tifffile.TiffFile(path) as tif:
            series = _single_series(path, tif)
            _check_extents(path, tif)
            _check_claimed_size(path, tif, series)
            data = series.asarray()
            axes = series.axes
            fps = _imagej_fps(tif.imagej_metadata)
    problems = [m for m in warnings if any(h in m.lower() for h in _CORRUPTION_HINTS)]
    if problems:
        raise ReadError(
            f"{path}: could not be decoded as TIFF; the file is truncated or corrupt "
            f"({problems[0]})",
            path=path,
        )
    frames = _to_frames(path, data, axes, keep_color=keep_color)
    return numbered_video(frames, path, "tiff", fps=fps, extra={"axes": axes})


def _single_series(path: Path, tif: tifffile.TiffFile) -> Any:
    series = tif.series
    if not series:
        raise ReadError(f"{path}: TIFF file contains no images", path=path)
    if len(series) > 1:
        shapes = ", ".join(f"{s.shape} {s.dtype}" for s in series[:5])
        raise ReadError(
            f"{path}: TIFF pages differ in size or type ({shapes}); a stack needs pages "
            f"of one shape and dtype (shape {series[0].shape} expected)",
            path=path,
        )
    return series[0]


def _check_extents(path: Path, tif: tifffile.TiffFile) -> None:
    """Raise if any page's pixel data lies beyond the end of the file (truncation)."""
    size = tif.filehandle.size
    for index, page in enumerate(tif.pages):
        offsets = getattr(page, "dataoffsets", ())
        counts = getattr(page, "databytecounts", ())
        ends = [o + c for o, c in zip(offsets, counts, strict=False) if o and c]
        if ends and max(ends) > size:
            raise ReadError(
                f"{path}: could not be decoded as TIFF; page {index} extends beyond the end "
                f"of the file ({max(ends)} > {size} bytes), the file is truncated",
                path=path,
            )


#: How many times its stored bytes a compressed page may decode to (zlib's limit is ~1000:1;
#: JPEG 2000 / JPEG-XL tiles of a blank image go further).
MAX_COMPRESSION = 1 << 16


def _check_claimed_size(path: Path, tif: tifffile.TiffFile, series: Any) -> None:
    """Refuse sizes the file cannot hold before tifffile allocates them: each page's
    ImageWidth x ImageLength x SamplesPerPixel x BitsPerSample against the bytes its strips or
    tiles hold, and the series' page count (from ImageJ or tifffile shape metadata) against
    the pages in the file. Raises ReadError naming the file and the field."""
    size = tif.filehandle.size
    bad = f"{path}: could not be decoded as TIFF:"
    pages = [page for page in tif.pages if hasattr(page, "imagewidth")]
    for index, page in enumerate(pages):
        claimed = (page.imagewidth * page.imagelength * max(page.imagedepth, 1)
                   * page.samplesperpixel * page.bitspersample + 7) // 8
        stored = sum(int(c) for c in getattr(page, "databytecounts", ()) or ())
        ratio = 1 if page.compression == 1 else MAX_COMPRESSION
        if claimed > max(stored, 1) * ratio or claimed > size * ratio:
            raise ReadError(
                f"{bad} page {index}'s header fields ImageWidth x ImageLength "
                f"({page.imagewidth} x {page.imagelength}, {page.samplesperpixel} sample(s) of "
                f"{page.bitspersample} bits) claim {claimed} bytes but its data holds {stored}; "
                "the file is corrupt",
                path=path,
            )
    claimed = math.prod(series.shape) * np.dtype(series.dtype).itemsize
    page_bytes = max(math.prod(pages[0].shape) * np.dtype(series.dtype).itemsize, 1) if pages \
        else 1
    frames = claimed // page_bytes
    compressed = any(page.compression != 1 for page in pages)
    limit = size * (MAX_COMPRESSION if compressed else 1)
    if frames > len(pages) and claimed > limit:
        where = {"imagej": "ImageJ 'images'", "shaped": "tifffile 'shape'"}.get(
            str(getattr(series, "kind", "")).lower(), "series")
        raise ReadError(
            f"{bad} its {where} metadata claims {frames} pages of shape {pages[0].shape} "
            f"({claimed} bytes) but the file holds {len(pages)} page(s) in {size} bytes; the "
            "metadata is corrupt",
            path=path,
        )


def _to_frames(path: Path, data: np.ndarray, axes: str, *, keep_color: bool) -> np.ndarray:
    """Bring a tifffile series array into ``(T, H, W)`` or ``(T, H, W, 3)``."""
    if "S" in axes:
        data = np.moveaxis(data, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    spatial = axes.rstrip("S")
    if not spatial.endswith("YX"):
        raise ReadError(
            f"{path}: unsupported TIFF axes {axes!r} {data.shape}; expected pages of "
            "(Y, X) pixels, optionally with colour samples",
            path=path,
        )
    samples = data.shape[-1] if axes.endswith("S") else 0
    frame_shape = data.shape[len(spatial) - 2 :]
    data = data.reshape((-1,) + frame_shape)
    if samples in (0, 1, 2):
        return data[..., 0] if samples else data
    if samples not in (3, 4):
        raise ReadError(
            f"{path}: TIFF has {samples} samples per pixel; expected 1 (grey), 3 (RGB) or 4 (RGBA)",
            path=path,
        )
    rgb = data[..., :3]
    return rgb if keep_color else rgb_stack_to_gray(rgb)


def _imagej_fps(meta: dict[str, Any] | None) -> float | None:
    if not meta:
        return None
    for key, invert in (("fps", False), ("finterval", True)):
        try:
            value = float(meta[key])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return 1.0 / value if invert else value
    return None
