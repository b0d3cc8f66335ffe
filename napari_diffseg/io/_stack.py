"""Grey conversion and frame-by-frame stacking into one preallocated array."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .errors import ReadError

logger = logging.getLogger(__name__)

#: ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _path_of(source: str | Path) -> Path | None:
    return source if isinstance(source, Path) else None


def is_gray(rgb: np.ndarray) -> bool:
    """True if the three channels of an ``(..., 3)`` array are identical."""
    return bool(
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    )


def rgb_to_gray(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Convert one ``(H, W, 3)`` RGB image to ``(H, W)`` grey with the BT.601 weights.

    Integer input is rounded and clipped and keeps its dtype; if all channels are equal
    the result is simply channel 0. Writes into ``out`` when given.
    """
    if out is None:
        out = np.empty(rgb.shape[:-1], dtype=rgb.dtype)
    if is_gray(rgb):
        out[...] = rgb[..., 0]
        return out
    work = np.float64 if rgb.dtype.itemsize > 2 else np.float32
    acc = rgb[..., 0].astype(work) * LUMA_WEIGHTS[0]
    acc += rgb[..., 1].astype(work) * LUMA_WEIGHTS[1]
    acc += rgb[..., 2].astype(work) * LUMA_WEIGHTS[2]
    if rgb.dtype.kind in "ui":
        info = np.iinfo(rgb.dtype)
        np.rint(acc, out=acc)
        np.clip(acc, info.min, info.max, out=acc)
    np.copyto(out, acc, casting="unsafe")
    return out


def rgb_stack_to_gray(rgb: np.ndarray) -> np.ndarray:
    """Convert ``(T, H, W, 3)`` RGB frames to ``(T, H, W)`` grey, one frame at a time."""
    out = np.empty(rgb.shape[:-1], dtype=rgb.dtype)
    for t in range(rgb.shape[0]):
        rgb_to_gray(rgb[t], out=out[t])
    return out


def split_channels(
    frame: np.ndarray, source: str | Path
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Return ``(gray, None)`` for a grey frame or ``(None, rgb)`` for a colour one.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 2)`` (grey + alpha), ``(H, W, 3)`` and
    ``(H, W, 4)`` (alpha dropped). RGB frames whose channels are equal count as grey.
    """
    if frame.ndim == 2:
        return frame, None
    if frame.ndim == 3 and frame.shape[-1] in (1, 2):
        return frame[..., 0], None
    if frame.ndim == 3 and frame.shape[-1] in (3, 4):
        rgb = frame[..., :3]
        if is_gray(rgb):
            return rgb[..., 0], None
        return None, rgb
    raise ReadError(
        f"{source}: unsupported image shape {frame.shape}; expected (H, W) grey or "
        "(H, W, 3|4) colour",
        path=_path_of(source),
    )


class FrameStack:
    """Collects frames one by one into a ``(T, H, W)`` (or ``(T, H, W, 3)``) array.

    Colour frames are converted to grey as they arrive unless ``keep_color`` is set, so
    a colour copy of the whole video is never held. The buffer starts at ``capacity``
    frames (a size hint) and grows if more arrive. All frames must share size and dtype.
    """

    def __init__(self, *, keep_color: bool = False, capacity: int = 0) -> None:
        self.keep_color = keep_color
        self._capacity = max(int(capacity), 1)
        self._buf: np.ndarray | None = None
        self._n = 0
        self._first_source: str | Path = ""

    def __len__(self) -> int:
        return self._n

    @property
    def is_color(self) -> bool:
        """True if the collected frames are stored as RGB."""
        return self._buf is not None and self._buf.ndim == 4

    def add(self, frame: np.ndarray, source: str | Path) -> None:
        """Append one frame; ``source`` names it in error messages (file or file+index)."""
        frame = np.asarray(frame)
        gray, rgb = split_channels(frame, source)
        if self._buf is None:
            self._allocate(frame, color=rgb is not None and self.keep_color, source=source)
        self._check(frame, source)
        if self._n == self._buf.shape[0]:
            self._grow()
        target = self._buf[self._n]
        if rgb is None:
            target[...] = gray[..., None] if self.is_color else gray
        elif self.is_color:
            target[...] = rgb
        elif self.keep_color:
            self._upgrade_to_color()
            self._buf[self._n] = rgb
        else:
            rgb_to_gray(rgb, out=target)
        self._n += 1

    def result(self) -> np.ndarray:
        """The collected ``(T, H, W[, 3])`` array (trimmed to the frames received)."""
        if self._buf is None:
            raise ValueError("no frames were added")
        if self._n == self._buf.shape[0]:
            return self._buf
        if self._n >= 0.9 * self._buf.shape[0]:
            return self._buf[: self._n]
        return self._buf[: self._n].copy()

    def _allocate(self, frame: np.ndarray, *, color: bool, source: str | Path) -> None:
        height, width = frame.shape[:2]
        shape = (self._capacity, height, width) + ((3,) if color else ())
        self._buf = np.empty(shape, dtype=frame.dtype)
        self._first_source = source

    def _check(self, frame: np.ndarray, source: str | Path) -> None:
        expected = self._buf.shape[1:3]
        if frame.shape[:2] != expected:
            raise ReadError(
                f"{source}: frame has shape {frame.shape[:2]} (H, W) but the first frame "
                f"({self._first_source}) has shape {expected}; all frames must be the same size",
                path=_path_of(source),
            )
        if frame.dtype != self._buf.dtype:
            raise ReadError(
                f"{source}: frame has dtype {frame.dtype} but the first frame "
                f"({self._first_source}) has dtype {self._buf.dtype}; all frames must share "
                "one bit depth",
                path=_path_of(source),
            )

    def _grow(self) -> None:
        old = self._buf
        new = np.empty((max(2 * old.shape[0], 4),) + old.shape[1:], dtype=old.dtype)
        new[: self._n] = old[: self._n]
        self._buf = new

    def _upgrade_to_color(self) -> None:
        logger.debug("colour frame found after %d grey frames; storing RGB", self._n)
        old = self._buf
        new = np.empty(old.shape + (3,), dtype=old.dtype)
        new[: self._n] = old[: self._n, ..., None]
        self._buf = new
