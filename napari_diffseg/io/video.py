"""Readers for video files: MP4 / AVI / MOV (PyAV) and animated GIF (Pillow)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import imageio.v3 as iio

from ._stack import FrameStack
from .core import Video, numbered_video
from .errors import ReadError, check_file, decode_errors

logger = logging.getLogger(__name__)

_META_KEYS = ("codec", "video_format", "duration")


def read_video(path: str | Path, *, keep_color: bool = False) -> Video:
    """Read a video file into ``(T, H, W)`` uint8 frames.

    With ``keep_color=True`` a video with colour content gives ``(T, H, W, 3)``; a video
    whose frames are all grey (equal channels) stays ``(T, H, W)``. Frames are converted
    one by one into a preallocated array. ``fps`` comes from the container metadata.
    """
    path = check_file(path)
    if path.suffix.lower() == ".gif":
        return _read_gif(path, keep_color=keep_color)
    return _read_pyav(path, keep_color=keep_color)


def _read_pyav(path: Path, *, keep_color: bool) -> Video:
    with decode_errors(path, "video"):
        with iio.imopen(path, "r", plugin="pyav") as file:
            props = file.properties()
            metadata = file.metadata()
            capacity = _frames_to_preallocate(path, props.shape)
            stack = FrameStack(keep_color=keep_color, capacity=capacity)
            for index, frame in enumerate(file.iter(thread_type="FRAME")):
                stack.add(frame, f"{path} (frame {index})")
    if len(stack) == 0:
        raise ReadError(f"{path}: contains no video frames", path=path)
    frames = stack.result()
    extra = {k: _jsonable(metadata[k]) for k in _META_KEYS if metadata.get(k) is not None}
    fps = _positive_float(metadata.get("fps"))
    return numbered_video(frames, path, "video", fps=fps, extra=extra)


#: Preallocate at most this many times the file's size for the frames the container claims;
#: beyond it the frame buffer grows as frames really arrive.
PREALLOCATE_RATIO = 64


def _frames_to_preallocate(path: Path, shape: tuple[int, ...]) -> int:
    """How many frames to allocate up front from the container's frame count ``shape[0]``.

    The count comes from the header (or duration x fps) and is not trusted: more frames than
    the file has bytes is impossible and raises ReadError naming the file and the field; a
    count that would allocate more than :data:`PREALLOCATE_RATIO` times the file is only a
    hint, capped (the buffer grows if the frames really come)."""
    claimed = int(shape[0] or 0) if shape else 0
    size = path.stat().st_size
    if claimed > size:
        raise ReadError(
            f"{path}: could not be decoded as video: its header's frame count ({claimed} "
            f"frames) exceeds the file's {size} bytes; the header is corrupt",
            path=path,
        )
    frame_bytes = max(math.prod(int(v) for v in shape[1:]), 1) if len(shape) > 1 else 1
    return max(min(claimed, PREALLOCATE_RATIO * size // frame_bytes), 1)


def _read_gif(path: Path, *, keep_color: bool) -> Video:
    with decode_errors(path, "GIF"):
        with iio.imopen(path, "r", plugin="pillow") as file:
            n_images = file.properties(index=...).n_images or 0
            first_meta = file.metadata(index=0)
            stack = FrameStack(keep_color=keep_color, capacity=n_images)
            for index, frame in enumerate(file.iter(mode="RGB")):
                stack.add(frame, f"{path} (frame {index})")
    if len(stack) == 0:
        raise ReadError(f"{path}: contains no frames", path=path)
    frames = stack.result()
    duration_ms = _positive_float(first_meta.get("duration"))
    extra: dict[str, Any] = {}
    if duration_ms is not None:
        extra["duration_ms"] = duration_ms
    fps = 1000.0 / duration_ms if duration_ms else None
    return numbered_video(frames, path, "video", fps=fps, extra=extra)


def _positive_float(value: Any) -> float | None:
    """``float(value)`` if it is a finite positive number, else ``None``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
