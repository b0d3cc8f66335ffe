"""Atomic file replacement: write to a temporary sibling, then ``os.replace``.

Temporary files are named ``.<target name>.<writer pid>-<8 hex digits>.tmp`` (0.1 wrote
``.<target name>.<8 hex digits>.tmp``). A process killed mid-write leaves one behind;
:func:`remove_stale_temps` removes those of this naming whose writer is gone.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import WriteError

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
#: A temporary file of ours: ``.<target>.<pid>-<hex8>.tmp`` (or the pid-less 0.1 naming).
TEMP_PATTERN = re.compile(r"^\.(?P<target>.+)\.(?:(?P<pid>[0-9]+)-)?[0-9a-f]{8}\.tmp$")
#: A temporary file is stale once untouched this long (seconds) and its writer is gone.
STALE_AFTER_S = 60.0


def _create_temp(target: Path) -> Path:
    """Create an empty, hidden temporary file next to ``target`` (honours the umask)."""
    for _ in range(100):
        candidate = target.with_name(
            f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
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
        raise WriteError(f"{target}: could not be written ({os_reason(exc)})",
                         path=target) from exc
    try:
        yield temp
        _fsync(temp)
        os.replace(temp, target)
    except BaseException as exc:
        with suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError):
            raise WriteError(f"{target}: could not be written ({os_reason(exc)})",
                             path=target) from exc
        if isinstance(exc, Exception) and not isinstance(exc, (WriteError, MemoryError)):
            raise WriteError(
                f"{target}: could not be written ({type(exc).__name__}: {exc})", path=target
            ) from exc
        raise


def _process_alive(pid: int) -> bool:
    """True if a process ``pid`` runs on this machine (or we cannot tell)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return False  # no cheap check: the age alone decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def is_stale_temp(path: Path, *, now: float | None = None,
                  older_than: float = STALE_AFTER_S) -> bool:
    """True for a temporary file of our naming (see the module docstring) that nobody can
    still be writing: untouched for ``older_than`` seconds and its writer's pid (if the name
    holds one) no longer running."""
    found = TEMP_PATTERN.match(path.name)
    if found is None:
        return False
    try:
        info = path.lstat()
    except OSError:
        return False
    if not path.is_file() or path.is_symlink():
        return False
    if (now if now is not None else time.time()) - info.st_mtime < older_than:
        return False
    pid = found.group("pid")
    return pid is None or not _process_alive(int(pid))


def remove_stale_temps(folder: str | Path, *, recursive: bool = False,
                       older_than: float = STALE_AFTER_S) -> list[Path]:
    """Remove the stale temporary files of our naming in ``folder`` (and below it with
    ``recursive``); returns the removed paths. Never raises: a folder that cannot be listed
    or a file that cannot be removed (read-only install, say) is left as it is."""
    folder = Path(folder)
    removed: list[Path] = []
    now = time.time()
    try:
        candidates = list(folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        if not is_stale_temp(path, now=now, older_than=older_than):
            continue
        try:
            path.unlink()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                logger.debug("could not remove stale %s (%s)", path, exc)
            continue
        removed.append(path)
    if removed:
        logger.info("removed %d stale temporary file(s) left by interrupted saves in %s",
                    len(removed), folder)
    return removed


def check_writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove it writable by creating and removing a file of
    our temporary naming in it. Raises :class:`WriteError` naming the folder and the reason
    (permission denied, read-only file system, no space left, ...)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _create_temp(folder / ".write-test")
        probe.unlink()
    except OSError as exc:
        raise WriteError(f"{folder}: the {what} is not writable ({os_reason(exc)})",
                         path=folder) from exc
    return folder


def os_reason(exc: OSError) -> str:
    """The reason of an OS error in words, without the path (e.g. "No space left on
    device")."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
