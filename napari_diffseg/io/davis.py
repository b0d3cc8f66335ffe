"""Reader for DAVIS-style datasets.

Layout::

    root/JPEGImages/<sequence>/<frame>.jpg|png     frames
    root/Annotations/<sequence>/<frame>.png        optional label-id PNGs (palette or grey)
    root/classes.json                              optional {"0": "background", ...} or list
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .core import Video, VideoMetadata, is_hidden, natural_sort_key
from .errors import ReadError, check_file, decode_errors
from .frames import IMAGE_SUFFIXES, check_unique_stems, list_image_files, stack_image_files

logger = logging.getLogger(__name__)

FRAMES_DIR = "JPEGImages"
ANNOTATIONS_DIR = "Annotations"
CLASSES_FILE = "classes.json"

_ID_MODES = ("P", "L", "1", "I;16", "I;16L", "I;16B", "I;16N", "I")


def is_davis_root(path: Path) -> bool:
    """True if ``path`` is a folder containing ``JPEGImages/``."""
    return (path / FRAMES_DIR).is_dir()


def is_davis_sequence_dir(path: Path) -> bool:
    """True for ``root/JPEGImages/<seq>`` or ``root/Annotations/<seq>`` of a DAVIS root."""
    return path.parent.name in (FRAMES_DIR, ANNOTATIONS_DIR) and is_davis_root(path.parent.parent)


def list_sequences(root: str | Path) -> list[str]:
    """Names of the sequences (sub-folders of ``root/JPEGImages``), in natural order."""
    root = Path(root)
    if not is_davis_root(root):
        raise ReadError(
            f"{root}: not a DAVIS-style dataset root (expected a '{FRAMES_DIR}' sub-folder)",
            path=root,
        )
    names = [p.name for p in (root / FRAMES_DIR).iterdir() if p.is_dir() and not is_hidden(p)]
    return sorted(names, key=natural_sort_key)


def read_dataset(root: str | Path, *, keep_color: bool = False) -> list[Video]:
    """Read every sequence of a DAVIS root, in :func:`list_sequences` order."""
    root = Path(root)
    sequences = list_sequences(root)
    if not sequences:
        raise ReadError(f"{root}: '{FRAMES_DIR}' contains no sequence folders", path=root)
    return [read_sequence(root, name, keep_color=keep_color) for name in sequences]


def read_classes(path: str | Path) -> dict[int, str]:
    """Read ``classes.json``: ``{"0": "background", "1": "vessel"}`` or a list of names.

    Returns ``{id: name}``; raises :class:`ReadError` naming the file if it is malformed.
    """
    path = check_file(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(f"{path}: could not be parsed as JSON ({exc})", path=path) from exc
    hint = 'expected {"0": "background", "1": "vessel", ...} or ["background", "vessel", ...]'
    if isinstance(content, list):
        items = list(enumerate(content))
    elif isinstance(content, dict):
        items = []
        for key, name in content.items():
            if not (isinstance(key, str) and key.strip().isascii() and key.strip().isdigit()):
                raise ReadError(
                    f"{path}: class id {key!r} is not a non-negative integer; {hint}", path=path
                )
            items.append((int(key), name))
    else:
        raise ReadError(f"{path}: malformed classes file; {hint}", path=path)
    classes: dict[int, str] = {}
    for class_id, name in items:
        if not isinstance(name, str):
            raise ReadError(
                f"{path}: class {class_id} has name {name!r}, not a string; {hint}", path=path
            )
        if class_id in classes:
            raise ReadError(f"{path}: class id {class_id} is given twice", path=path)
        classes[class_id] = name
    return classes


def read_davis(path: str | Path, *, keep_color: bool = False, sequence: str | None = None) -> Video:
    """Read one sequence given a DAVIS root or one of its sequence folders.

    ``path`` may be the root (one sequence, or pick it with ``sequence``),
    ``root/JPEGImages/<seq>`` or ``root/Annotations/<seq>``.
    """
    path = Path(path)
    if is_davis_root(path):
        root = path
        names = list_sequences(root)
        if sequence is None:
            if len(names) != 1:
                listed = ", ".join(names) if names else "none"
                raise ReadError(
                    f"{root}: DAVIS dataset has {len(names)} sequences ({listed}); pass "
                    "sequence=<name> to read one, or use read_dataset() to read all",
                    path=root,
                )
            sequence = names[0]
    elif is_davis_sequence_dir(path):
        root = path.parent.parent
        if sequence is not None and sequence != path.name:
            raise ReadError(
                f"{path}: is the folder of sequence {path.name!r}, not {sequence!r}", path=path
            )
        sequence = path.name
    else:
        raise ReadError(
            f"{path}: not a DAVIS dataset root or sequence folder (expected "
            f"<root>/{FRAMES_DIR}/<sequence>)",
            path=path,
        )
    return read_sequence(root, sequence, keep_color=keep_color, opened=path)


def read_sequence(
    root: Path, sequence: str, *, keep_color: bool = False, opened: Path | None = None
) -> Video:
    """Read frames ``(T, H, W)`` and annotations ``(T, H, W)`` of one DAVIS sequence."""
    names, frames = read_sequence_frames(root, sequence, keep_color=keep_color)
    classes_path = root / CLASSES_FILE
    classes = read_classes(classes_path) if classes_path.exists() else None
    annotation_dir = root / ANNOTATIONS_DIR / sequence
    labels, labelled = read_annotation_folder(annotation_dir, names, frames.shape[1:3], classes)
    logger.info(
        "read DAVIS sequence %s: frames %s, %d annotated", sequence, frames.shape, len(labelled)
    )
    return sequence_video(root, sequence, names, frames, (labels, labelled), classes, opened=opened)


def sequence_video(
    root: Path,
    sequence: str,
    names: list[str],
    frames: np.ndarray,
    annotations: tuple[np.ndarray, list[int]],
    classes: dict[int, str] | None,
    *,
    source_format: str = "davis",
    opened: Path | None = None,
    extra: dict[str, object] | None = None,
) -> Video:
    """The :class:`Video` of one dataset sequence: frames ``(T, H, W)``, ``annotations`` =
    (labels ``(T, H, W)``, annotated frame indices); ``extra`` adds to ``meta.extra``."""
    labels, labelled = annotations
    return Video(
        frames=frames,
        meta=VideoMetadata(
            path=opened if opened is not None else root,
            source_format=source_format,
            frame_names=names,
            extra={"root": str(root), "sequence": sequence, **(extra or {})},
        ),
        labels=labels,
        labelled=labelled,
        classes=classes,
        sequence=sequence,
    )


def read_sequence_frames(
    root: Path, sequence: str, *, keep_color: bool = False
) -> tuple[list[str], np.ndarray]:
    """Frame stems (length T) and frames ``(T, H, W)`` of ``root/JPEGImages/<sequence>``."""
    frame_dir = root / FRAMES_DIR / sequence
    if not frame_dir.is_dir():
        available = ", ".join(list_sequences(root)) or "none"
        raise ReadError(
            f"{frame_dir}: sequence {sequence!r} not found in {root} (available: {available})",
            path=frame_dir,
        )
    files = list_image_files(frame_dir, IMAGE_SUFFIXES)
    if not files:
        raise ReadError(f"{frame_dir}: sequence folder contains no frames", path=frame_dir)
    names = check_unique_stems(files)
    return names, stack_image_files(files, keep_color=keep_color)


def read_annotation(path: Path) -> np.ndarray:
    """Read one annotation PNG as ``(H, W)`` label ids (uint8 or uint16).

    Palette PNGs give their indices, grey PNGs their values. Colour PNGs are rejected.
    """
    path = check_file(path)
    with decode_errors(path, "a PNG annotation"):
        with Image.open(path) as image:
            mode = image.mode
            if mode not in _ID_MODES:
                raise ReadError(
                    f"{path}: annotation has image mode {mode}; annotations must be label ids "
                    "(palette or grayscale PNG), not colour images",
                    path=path,
                )
            ids = np.asarray(image)
    if ids.dtype == bool:
        return ids.astype(np.uint8)
    if ids.dtype.kind == "i" or ids.dtype.itemsize > 2:
        if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.uint16).max):
            raise ReadError(
                f"{path}: label ids must lie in 0..65535, found {ids.min()}..{ids.max()}",
                path=path,
            )
        ids = ids.astype(np.uint16)
    return ids


def read_annotation_folder(
    folder: Path,
    names: list[str],
    frame_shape: tuple[int, int],
    classes: dict[int, str] | None,
    *,
    decode: Callable[[Path], np.ndarray] = read_annotation,
    classes_file: str = CLASSES_FILE,
) -> tuple[np.ndarray, list[int]]:
    """Labels ``(T, H, W)`` (0 where unannotated) and the indices of annotated frames.

    Each ``<frame stem>.png`` in ``folder`` is turned into ``(H, W)`` ids by ``decode``;
    it must match a frame, have the frame's size and, when ``classes`` is given, hold only
    ids of ``classes`` (named ``classes_file`` in the error) or 0.
    """
    labels = np.zeros((len(names),) + tuple(frame_shape), dtype=np.uint8)
    if not folder.is_dir():
        return labels, []
    index_of = {name: i for i, name in enumerate(names)}
    valid = None if classes is None else set(classes) | {0}
    labelled: list[int] = []
    for path in list_image_files(folder, {".png"}):
        index = index_of.get(path.stem)
        if index is None:
            raise ReadError(
                f"{path}: annotation {path.stem!r} matches no frame of the sequence (frames "
                f"are named {names[0]!r} ... {names[-1]!r})",
                path=path,
            )
        ids = decode(path)
        if ids.shape != labels.shape[1:]:
            raise ReadError(
                f"{path}: annotation has size {ids.shape} (H, W) but its frame has size "
                f"{labels.shape[1:]}",
                path=path,
            )
        if valid is not None:
            present = np.flatnonzero(np.bincount(ids.ravel()))
            bad = sorted(int(i) for i in present if int(i) not in valid)
            if bad:
                raise ReadError(
                    f"{path}: label ids {bad} are not in {classes_file} (valid ids: "
                    f"{sorted(valid)})",
                    path=path,
                )
        if ids.dtype.itemsize > labels.dtype.itemsize and ids.max() > 255:
            labels = labels.astype(np.uint16)
        labels[index] = ids
        labelled.append(index)
    others = [p.name for p in list_image_files(folder) if p.suffix.lower() != ".png"]
    if others:
        logger.warning("%s: ignoring non-PNG annotation files %s", folder, others[:5])
    return labels, sorted(labelled)
