"""Reader for MOSXAV downloads (X-ray coronary angiography, semantic and instance masks).

Layout of each split folder (``trainval/`` and ``test/``)::

    <split>/JPEGImages/<seq>/00000.jpg              frames
    <split>/Annotations/<seq>/00000.png             instance masks (one id per branch)
    <split>/Annotations_Semantic/<seq>/00000.png    semantic masks (ids of MOSXAV_CLASSES)
    <split>/ImageSets/{train,val,test}.txt          one sequence name per line
    <split>/labels.json                             class names (list or id -> name)

Semantic masks may hold class indices (palette or grey PNG) or the RGB colours of
:data:`MOSXAV_COLORS`; both are read as ``(H, W)`` class ids. Frames without a mask are
unlabelled (ids 0, not listed in ``Video.labelled``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .core import Video
from .davis import (
    _ID_MODES,
    ANNOTATIONS_DIR,
    FRAMES_DIR,
    list_sequences,
    read_annotation,
    read_annotation_folder,
    read_classes,
    read_sequence_frames,
    sequence_video,
)
from .errors import ReadError, check_file, decode_errors
from .palette import DEFAULT_PALETTE

logger = logging.getLogger(__name__)

SEMANTIC_DIR = "Annotations_Semantic"
INSTANCE_DIR = ANNOTATIONS_DIR
IMAGESETS_DIR = "ImageSets"
LABELS_FILE = "labels.json"
SPLIT_DIRS = ("trainval", "test")
ANNOTATION_KINDS = ("semantic", "instance")

#: Semantic class ids and names of MOSXAV.
MOSXAV_CLASSES: dict[int, str] = {
    0: "background",
    1: "vessel",
    2: "contrast catheter",
    3: "catheter",
    4: "balloon",
    5: "others",
}
#: RGB colour of each semantic class in MOSXAV's colour-coded masks.
MOSXAV_COLORS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),
    1: (85, 170, 255),
    2: (170, 255, 0),
    3: (249, 193, 0),
    4: (255, 0, 0),
    5: (244, 108, 59),
}
#: ``(256, 3)`` palette: the MOSXAV colours for ids 0..5, the DAVIS palette after them.
MOSXAV_PALETTE: np.ndarray = DEFAULT_PALETTE.copy()
MOSXAV_PALETTE[list(MOSXAV_COLORS)] = list(MOSXAV_COLORS.values())
MOSXAV_PALETTE.flags.writeable = False


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack ``(..., 3)`` uint8 colours into ``(...)`` uint32 ``R << 16 | G << 8 | B``."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colors_to_ids(
    rgb: np.ndarray, path: Path, colors: dict[int, tuple[int, int, int]] = MOSXAV_COLORS
) -> np.ndarray:
    """Map an ``(H, W, 3)`` colour mask to ``(H, W)`` uint8 class ids (vectorised lookup).

    Raises :class:`ReadError` naming ``path``, one offending pixel and its colour if a colour
    is not in ``colors``.
    """
    keys = pack_rgb(np.array([colors[i] for i in sorted(colors)], dtype=np.uint8))
    order = np.argsort(keys)
    keys, ids = keys[order], np.array(sorted(colors), dtype=np.uint8)[order]
    packed = pack_rgb(rgb[..., :3])
    pos = np.minimum(np.searchsorted(keys, packed), len(keys) - 1)
    unknown = keys[pos] != packed
    if unknown.any():
        row, col = (int(v) for v in np.argwhere(unknown)[0])
        colour = tuple(int(v) for v in rgb[row, col, :3])
        known = ", ".join(f"{i} {list(c)}" for i, c in sorted(colors.items()))
        raise ReadError(
            f"{path}: pixel (row {row}, col {col}) has colour {list(colour)}, which is not a "
            f"MOSXAV class colour ({int(unknown.sum())} such pixels; known: {known})",
            path=path,
        )
    return ids[pos]


def read_semantic_mask(path: Path) -> tuple[np.ndarray, str]:
    """Read one semantic mask as ``(H, W)`` class ids and its encoding (``"index"``/``"rgb"``)."""
    path = check_file(path)
    with decode_errors(path, "a PNG mask"):
        with Image.open(path) as image:
            mode = image.mode
            if mode in ("RGB", "RGBA"):
                rgb = np.asarray(image.convert("RGB"))
    if mode in _ID_MODES:
        return read_annotation(path), "index"
    if mode in ("RGB", "RGBA"):
        return colors_to_ids(rgb, path), "rgb"
    raise ReadError(
        f"{path}: mask has image mode {mode}; expected class indices (palette or grey PNG) "
        "or the RGB colours of the MOSXAV classes",
        path=path,
    )


def is_mosxav_split(path: Path) -> bool:
    """True for a split folder: ``JPEGImages/`` plus ``Annotations_Semantic/`` (or
    ``ImageSets/`` and ``labels.json``)."""
    path = Path(path)
    if not (path / FRAMES_DIR).is_dir():
        return False
    return (path / SEMANTIC_DIR).is_dir() or (
        (path / IMAGESETS_DIR).is_dir() and (path / LABELS_FILE).is_file()
    )


def is_mosxav_sequence_dir(path: Path) -> bool:
    """True for ``<split>/{JPEGImages,Annotations,Annotations_Semantic}/<seq>``."""
    path = Path(path)
    parents = (FRAMES_DIR, INSTANCE_DIR, SEMANTIC_DIR)
    return path.parent.name in parents and is_mosxav_split(path.parent.parent)


def split_roots(path: Path) -> list[Path]:
    """The MOSXAV split folders of ``path``: itself if it is one, else its ``trainval/`` and
    ``test/`` that are splits (possibly none)."""
    path = Path(path)
    if is_mosxav_split(path):
        return [path]
    return [path / name for name in SPLIT_DIRS if is_mosxav_split(path / name)]


def is_mosxav_root(path: Path) -> bool:
    """True for a download root holding ``trainval/`` and/or ``test/`` split folders."""
    path = Path(path)
    return not is_mosxav_split(path) and bool(split_roots(path))


def read_labels(path: str | Path) -> dict[int, str]:
    """Read ``labels.json``: a list of names, ``{"0": "background", ...}``,
    ``{"background": 0, ...}`` or a list of ``{"id": 0, "name": "background"}`` objects."""
    path = check_file(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(f"{path}: could not be parsed as JSON ({exc})", path=path) from exc
    if isinstance(content, list) and content and all(isinstance(c, dict) for c in content):
        try:
            return {int(c.get("id", i)): str(c["name"]) for i, c in enumerate(content)}
        except (KeyError, TypeError, ValueError) as exc:
            raise ReadError(f"{path}: malformed class entry ({exc})", path=path) from exc
    if isinstance(content, dict) and content and all(
        isinstance(v, int) and not str(k).strip().isdigit() for k, v in content.items()
    ):
        return {int(v): str(k) for k, v in content.items()}
    return read_classes(path)


def find_classes(split_root: Path) -> tuple[dict[int, str], str]:
    """Class names from ``labels.json`` beside ``JPEGImages`` or in the parent folder, else
    :data:`MOSXAV_CLASSES`; also returns where they came from (for error messages)."""
    for candidate in (split_root / LABELS_FILE, split_root.parent / LABELS_FILE):
        if candidate.is_file():
            return read_labels(candidate), str(candidate)
    return dict(MOSXAV_CLASSES), "the MOSXAV classes"


def list_split(root: str | Path, split: str) -> list[str]:
    """Sequence names listed in ``ImageSets/<split>.txt``, in file order.

    ``root`` is a split folder (names are returned as listed) or a download root (names come
    back as ``"<split folder>/<name>"`` from every split folder that has the list).
    Raises :class:`ReadError` if the list is missing or names a sequence not in JPEGImages.
    """
    root = Path(root)
    splits = split_roots(root)
    if not splits:
        raise ReadError(f"{root}: not a MOSXAV split or download root", path=root)
    if is_mosxav_split(root):
        return _read_imageset(root, split)
    having = [s for s in splits if (s / IMAGESETS_DIR / f"{split}.txt").is_file()]
    if not having:
        expected = " or ".join(str(s / IMAGESETS_DIR / f"{split}.txt") for s in splits)
        raise ReadError(f"{root}: no split list {split!r} (expected {expected})", path=root)
    return [f"{s.name}/{name}" for s in having for name in _read_imageset(s, split)]


def _read_imageset(split_root: Path, split: str) -> list[str]:
    path = split_root / IMAGESETS_DIR / f"{split}.txt"
    if not path.is_file():
        raise ReadError(f"{path}: split list {split!r} does not exist", path=path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReadError(f"{path}: could not be read ({exc})", path=path) from exc
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    available = set(list_sequences(split_root))
    missing = [name for name in names if name not in available]
    if missing:
        raise ReadError(
            f"{path}: lists sequences {missing[:5]} that are not in "
            f"{split_root / FRAMES_DIR}",
            path=path,
        )
    return list(dict.fromkeys(names))


def _all_sequences(root: Path) -> list[str]:
    """Qualified ``"<split folder>/<name>"`` of every sequence under a download root."""
    return [f"{s.name}/{name}" for s in split_roots(root) for name in list_sequences(s)]


def read_mosxav(
    path: str | Path,
    *,
    keep_color: bool = False,
    sequence: str | None = None,
    annotations: str | None = None,
) -> Video:
    """Read one MOSXAV sequence from a sequence folder, a split folder or a download root.

    ``sequence`` picks the sequence (``"v07"`` in a split folder, ``"trainval/v07"`` in a
    download root). ``annotations`` is ``"semantic"`` (``Annotations_Semantic``) or
    ``"instance"`` (``Annotations``); ``None`` means instance only when ``path`` is an
    ``Annotations/<seq>`` folder, semantic otherwise.
    """
    path = Path(path)
    if is_mosxav_sequence_dir(path):
        if sequence is not None and sequence != path.name:
            raise ReadError(
                f"{path}: is the folder of sequence {path.name!r}, not {sequence!r}", path=path
            )
        if annotations is None and path.parent.name == INSTANCE_DIR:
            annotations = "instance"
        split_root, sequence = path.parent.parent, path.name
    elif is_mosxav_split(path) or is_mosxav_root(path):
        split_root, sequence = _resolve(path, sequence)
    else:
        raise ReadError(
            f"{path}: not a MOSXAV split folder ({FRAMES_DIR}/ and {SEMANTIC_DIR}/), sequence "
            "folder or download root (trainval/, test/)",
            path=path,
        )
    return read_mosxav_sequence(
        split_root, sequence, keep_color=keep_color, annotations=annotations, opened=path
    )


def _resolve(path: Path, sequence: str | None) -> tuple[Path, str]:
    """Split folder and sequence name meant by ``sequence`` under ``path``."""
    if is_mosxav_split(path):
        choices = list_sequences(path)
        if sequence is None and len(choices) == 1:
            return path, choices[0]
        if sequence is not None:
            return path, sequence
    else:
        choices = _all_sequences(path)
        if sequence is None and len(choices) == 1:
            sequence = choices[0]
        if sequence is not None:
            matches = [c for c in choices if sequence in (c, c.split("/", 1)[1])]
            if len(matches) == 1:
                subset, name = matches[0].split("/", 1)
                return path / subset, name
    listed = ", ".join(choices) if choices else "none"
    what = f"{sequence!r} is not one of" if sequence else "pass sequence=<name> to pick one of"
    raise ReadError(
        f"{path}: MOSXAV data has {len(choices)} sequences; {what} them ({listed}), or use "
        "read_dataset() to read all",
        path=path,
    )


def read_mosxav_sequence(
    split_root: Path,
    sequence: str,
    *,
    keep_color: bool = False,
    annotations: str | None = None,
    opened: Path | None = None,
) -> Video:
    """Read frames ``(T, H, W)`` and semantic or instance masks ``(T, H, W)`` of a sequence."""
    kind = annotations or "semantic"
    if kind not in ANNOTATION_KINDS:
        raise ReadError(
            f"{split_root}: annotations must be 'semantic' or 'instance', got {annotations!r}",
            path=split_root,
        )
    names, frames = read_sequence_frames(split_root, sequence, keep_color=keep_color)
    encodings: set[str] = set()
    shape = frames.shape[1:3]
    if kind == "semantic":
        classes, source = find_classes(split_root)

        def decode(mask_path: Path) -> np.ndarray:
            ids, encoding = read_semantic_mask(mask_path)
            encodings.add(encoding)
            return ids

        labels, labelled = read_annotation_folder(
            split_root / SEMANTIC_DIR / sequence,
            names,
            shape,
            classes,
            decode=decode,
            classes_file=source,
        )
    else:
        labels, labelled = read_annotation_folder(
            split_root / INSTANCE_DIR / sequence, names, shape, None
        )
        encodings = {"index"} if labelled else set()
        present = np.flatnonzero(np.bincount(labels[labelled].ravel())) if labelled else []
        classes = {0: "background", **{int(i): f"branch {int(i)}" for i in present if i}}
    encoding = None if not encodings else encodings.pop() if len(encodings) == 1 else "mixed"
    logger.info(
        "read MOSXAV %s sequence %s/%s: frames %s, %d annotated (%s)",
        kind, split_root.name, sequence, frames.shape, len(labelled), encoding,
    )
    extra = {"subset": split_root.name, "annotations": kind, "mask_encoding": encoding}
    return sequence_video(
        split_root, sequence, names, frames, (labels, labelled), classes,
        source_format="mosxav", opened=opened, extra=extra,
    )


def read_mosxav_dataset(
    root: str | Path,
    *,
    split: str | None = None,
    annotations: str | None = None,
    keep_color: bool = False,
) -> list[Video]:
    """Read the sequences of ``ImageSets/<split>.txt`` (every sequence if ``split`` is None)
    of a MOSXAV split folder or download root."""
    root = Path(root)
    if not split_roots(root):
        raise ReadError(f"{root}: not a MOSXAV split folder or download root", path=root)
    if is_mosxav_split(root):
        names = list_split(root, split) if split else list_sequences(root)
        targets = [(root, name) for name in names]
    else:
        qualified = list_split(root, split) if split else _all_sequences(root)
        targets = [(root / q.split("/", 1)[0], q.split("/", 1)[1]) for q in qualified]
    if not targets:
        raise ReadError(f"{root}: no sequences to read (split {split!r})", path=root)
    return [
        read_mosxav_sequence(s, name, keep_color=keep_color, annotations=annotations)
        for s, name in targets
    ]
