"""Exceptions raised by the readers and writers, and helpers that build them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


class ReadError(ValueError):
    """An input could not be read.

    The message names the offending file or folder, states the problem and, where it
    helps, what would have been valid. ``path`` holds the offending path (or ``None``);
    ``detail`` the decoding library's own words, appended in parentheses (for the log and
    the command line) but left out of :meth:`summary`.
    """

    def __init__(
        self, message: str, *, path: str | Path | None = None, detail: str | None = None
    ) -> None:
        super().__init__(f"{message} ({detail})" if detail else message)
        self.path = Path(path) if path is not None else None
        self.detail = detail
        self._message = message

    def summary(self) -> str:
        """The message for a notification, which shows its first line only: the problem
        first, then the file's name instead of its full path, without the library's words.

        ``"/data/x/run1.mp4: could not be decoded as video; …"`` becomes
        ``"Could not be decoded as video; …: run1.mp4"``.
        """
        text = self._message
        if self.path is None:
            return text
        full, name = str(self.path), self.path.name or str(self.path)
        if text.startswith(f"{full}: "):
            problem = text[len(full) + 2:].replace(full, name)
            return f"{problem[:1].upper()}{problem[1:]}: {name}"
        return text.replace(full, name)


class WriteError(ValueError):
    """An output could not be written (bad arguments, conflicting files or encoder failure)."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


def check_file(path: str | Path) -> Path:
    """Return ``path`` as a :class:`Path` after checking it is an existing, non-empty file.

    Raises :class:`ReadError` if it does not exist, is not a regular file or has 0 bytes.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError(f"{path}: does not exist", path=path)
    if not path.is_file():
        raise ReadError(f"{path}: is not a file", path=path)
    if path.stat().st_size == 0:
        raise ReadError(f"{path}: file is empty (0 bytes)", path=path)
    return path


@contextmanager
def decode_errors(path: Path, what: str) -> Iterator[None]:
    """Turn any library exception raised inside the block into a :class:`ReadError`.

    ``what`` describes the expected content (e.g. ``"video"``) for the message. A
    :class:`ReadError` raised inside passes through unchanged; ``MemoryError`` too.
    """
    try:
        yield
    except (ReadError, MemoryError):
        raise
    except Exception as exc:  # the decoders raise a wide variety of types
        logger.debug("decoding %s failed", path, exc_info=True)
        raise ReadError(
            f"{path}: could not be decoded as {what}; the file may be truncated or corrupt",
            path=path,
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
