"""Atomic file replacement: write to a temporary sibling, then ``os.replace``."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import WriteError

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


def _create_temp(target: Path) -> Path:
    """Create an empty, hidden temporary file next to ``target`` (honours the umask)."""
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise WriteError(f"{target}: could not create a temporary file next to it", path=target)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        logger.debug("fsync of %s failed", path, exc_info=True)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it replaces ``target``.

    If the block raises, the temporary file is removed and ``target`` is left as it was.
    Encoder and OS errors are re-raised as :class:`WriteError` naming ``target``.
    """
    target = Path(target)
    try:
        temp = _create_temp(target)
    except OSError as exc:
        raise WriteError(f"{target}: could not be written ({exc})", path=target) from exc
    try:
        yield temp
        _fsync(temp)
        os.replace(temp, target)
    except BaseException as exc:
        with suppress(OSError):
            temp.unlink()
        if isinstance(exc, Exception) and not isinstance(exc, (WriteError, MemoryError)):
            raise WriteError(
                f"{target}: could not be written ({type(exc).__name__}: {exc})", path=target
            ) from exc
        raise
