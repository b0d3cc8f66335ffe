"""Writers for annotations (DAVIS palette PNGs), DAVIS and MOSXAV datasets and TIFF stacks.

Every file is written atomically (temporary sibling + ``os.replace``), and all
arguments are validated before the first file is touched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ._atomic import atomic_path
from .core import default_frame_names
from .davis import ANNOTATIONS_DIR, CLASSES_FILE, FRAMES_DIR, read_classes
from .errors import ReadError, WriteError
from .frames import IMAGE_SUFFIXES, list_image_files
from .model_history import provenance_path, write_provenance
from .mosxav import (
    LABELS_FILE,
    MOSXAV_CLASSES,
    MOSXAV_COLORS,
    MOSXAV_PALETTE,
    SEMANTIC_DIR,
    read_labels,
)
from .palette import DEFAULT_PALETTE

logger = logging.getLogger(__name__)

_PNG_OPTIONS = {"format": "PNG", "compress_level": 4}


def write_annotations(
    out_dir: str | Path,
    labels: np.ndarray,
    *,
    frame_names: Sequence[str] | None = None,
    frames: Iterable[int] | None = None,
    classes: Mapping[int, str] | Sequence[str] | None = None,
) -> list[Path]:
    """Write ``(T, H, W)`` label ids as one DAVIS palette PNG per frame.

    Args:
        out_dir: Folder to write ``<frame name>.png`` into (created if needed).
        labels: ``(T, H, W)`` integer label ids in 0..255.
        frame_names: T file stems; default ``"00000"``, ``"00001"``, ...
        frames: Indices of the frames to write; ``None`` writes all T.
        classes: If given, every written id must be one of its keys (or 0).

    Returns:
        The written paths, in frame order.
    """
    labels = _check_labels(labels)
    names = _check_names(frame_names, labels.shape[0])
    indices = _check_indices(frames, labels.shape[0])
    valid = None if classes is None else set(_normalize_classes(classes)) | {0}
    _check_label_values(labels, indices, names, valid)
    return _write_pngs(Path(out_dir), labels, names, indices, _palette_image(DEFAULT_PALETTE))


def _palette_image(palette: np.ndarray) -> Callable[[np.ndarray], Image.Image]:
    """Encoder of ``(H, W)`` ids as a palette ("P") image with ``palette`` ``(256, 3)``."""

    def encode(ids: np.ndarray) -> Image.Image:
        image = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8))
        image.putpalette(palette.tobytes())
        return image

    return encode


def _write_pngs(
    out_dir: Path,
    labels: np.ndarray,
    names: list[str],
    indices: list[int],
    encode: Callable[[np.ndarray], Image.Image],
) -> list[Path]:
    """Write ``encode(labels[i])`` as ``out_dir/<names[i]>.png`` for each index, atomically."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{out_dir}: could not create folder ({exc})", path=out_dir) from exc
    written = []
    for index in indices:
        path = out_dir / f"{names[index]}.png"
        image = encode(labels[index])
        with atomic_path(path) as temp:
            image.save(temp, **_PNG_OPTIONS)
        written.append(path)
    logger.info("wrote %d annotation PNGs to %s", len(written), out_dir)
    return written


def write_davis(
    root: str | Path,
    sequence: str,
    labels: np.ndarray,
    *,
    frame_names: Sequence[str] | None = None,
    frames: Iterable[int] | None = None,
    classes: Mapping[int, str] | Sequence[str] | None = None,
    images: np.ndarray | None = None,
    provenance: Mapping | None = None,
) -> Path:
    """Write one sequence of a DAVIS-style dataset and return ``root``.

    Everything is validated first. Then ``root/classes.json`` is written when ``classes``
    is given; all T ``images`` (``(T, H, W)`` uint8/uint16 or ``(T, H, W, 3)`` uint8), if
    given, as lossless ``root/JPEGImages/<sequence>/<name>.png``; and the chosen frames of
    ``labels`` (``(T, H, W)`` ids 0..255) as ``root/Annotations/<sequence>/<name>.png``
    (see :func:`write_annotations`). An existing ``classes.json`` that disagrees with
    ``classes`` raises :class:`WriteError`; without ``classes`` an existing one is used to
    validate the labels. Without ``images``, an existing ``JPEGImages/<sequence>`` must
    hold the annotated frames. ``provenance`` (see
    :func:`~napari_diffseg.io.model_history.provenance`) goes to
    ``root/<sequence>.provenance.json``.
    """
    root = Path(root)
    _check_stem(sequence, "sequence name")
    labels = _check_labels(labels)
    names = _check_names(frame_names, labels.shape[0])
    indices = _check_indices(frames, labels.shape[0])
    classes_path = root / CLASSES_FILE
    existing = _existing_classes(classes_path)
    new = None if classes is None else _normalize_classes(classes)
    if new is not None and existing is not None and new != existing:
        raise WriteError(
            f"{classes_path}: already exists with different classes {existing}; refusing to "
            f"overwrite it with {new} (remove it or pass matching classes)",
            path=classes_path,
        )
    effective = new if new is not None else existing
    valid = None if effective is None else set(effective) | {0}
    _check_label_values(labels, indices, names, valid)
    frame_dir = root / FRAMES_DIR / sequence
    if images is not None:
        images = _check_images(images, labels.shape)
        _check_no_clash(frame_dir, names)
    else:
        _check_frames_exist(frame_dir, [names[i] for i in indices])
    if new is not None and existing is None:
        _write_classes(classes_path, new)
    if images is not None:
        _write_images(frame_dir, images, names)
    write_annotations(root / ANNOTATIONS_DIR / sequence, labels, frame_names=names, frames=indices)
    if provenance is not None:
        write_provenance(provenance_path(root, sequence), dict(provenance))
    logger.info("wrote DAVIS sequence %s to %s", sequence, root)
    return root


def write_mosxav(
    root: str | Path,
    sequence: str,
    labels: np.ndarray,
    *,
    frame_names: Sequence[str] | None = None,
    frames: Iterable[int] | None = None,
    encoding: str = "index",
    classes: Mapping[int, str] | Sequence[str] | None = None,
    provenance: Mapping | None = None,
) -> Path:
    """Write semantic masks of one sequence into a MOSXAV split folder and return ``root``.

    The chosen ``frames`` (indices; ``None`` = all T) of ``labels`` (``(T, H, W)`` class ids)
    go to ``root/Annotations_Semantic/<sequence>/<name>.png``: with ``encoding="index"`` as
    palette PNGs whose indices are the ids (palette: :data:`MOSXAV_COLORS`), with
    ``encoding="rgb"`` as RGB PNGs of the class colours. ``root/labels.json`` gets the class
    names (default :data:`MOSXAV_CLASSES`) as a list (a mapping if ids have gaps); an existing
    one that disagrees raises :class:`WriteError`. Frames themselves are not written.
    ``provenance`` goes to ``root/<sequence>.provenance.json``.
    """
    root = Path(root)
    _check_stem(sequence, "sequence name")
    if encoding not in ("index", "rgb"):
        raise WriteError(f"encoding must be 'index' or 'rgb', got {encoding!r}")
    labels = _check_labels(labels)
    names = _check_names(frame_names, labels.shape[0])
    indices = _check_indices(frames, labels.shape[0])
    new = _normalize_classes(MOSXAV_CLASSES if classes is None else classes)
    labels_path = root / LABELS_FILE
    existing = _existing_classes(labels_path, read_labels)
    if existing is not None and existing != new:
        raise WriteError(
            f"{labels_path}: already exists with different classes {existing}; refusing to "
            f"overwrite it with {new}",
            path=labels_path,
        )
    _check_label_values(labels, indices, names, set(new) | {0})
    if encoding == "rgb" and set(new) - set(MOSXAV_COLORS):
        raise WriteError(
            f"classes {sorted(set(new) - set(MOSXAV_COLORS))} have no MOSXAV colour; "
            "use encoding='index'"
        )
    _check_frames_exist(root / FRAMES_DIR / sequence, [names[i] for i in indices])
    if existing is None:
        _write_classes(labels_path, new, as_list=sorted(new) == list(range(len(new))))
    encode = _palette_image(MOSXAV_PALETTE) if encoding == "index" else _rgb_image
    _write_pngs(root / SEMANTIC_DIR / sequence, labels, names, indices, encode)
    if provenance is not None:
        write_provenance(provenance_path(root, sequence), dict(provenance))
    logger.info("wrote MOSXAV sequence %s (%s masks) to %s", sequence, encoding, root)
    return root


def _rgb_image(ids: np.ndarray) -> Image.Image:
    """``(H, W)`` MOSXAV class ids as an RGB image of the class colours."""
    colours = MOSXAV_PALETTE[np.asarray(ids, dtype=np.uint8)]
    return Image.fromarray(np.ascontiguousarray(colours))


def write_tiff(path: str | Path, labels: np.ndarray, *,
               provenance: Mapping | None = None) -> Path:
    """Write ``(T, H, W)`` labels as a T-page TIFF (zlib-compressed, dtype kept);
    ``provenance`` goes next to it as ``<stem>.provenance.json``."""
    path = Path(path)
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] == 0:
        raise WriteError(
            f"{path}: labels must be a (T, H, W) array with T >= 1, got shape {labels.shape}",
            path=path,
        )
    if not path.parent.is_dir():
        raise WriteError(f"{path}: folder {path.parent} does not exist", path=path)
    with atomic_path(path) as temp:
        tifffile.imwrite(
            temp,
            labels,
            photometric="minisblack",
            compression="zlib",
            metadata={"axes": "TYX"},
        )
    if provenance is not None:
        write_provenance(provenance_path(path), dict(provenance))
    logger.info("wrote %s %s labels to %s", labels.shape, labels.dtype, path)
    return path


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise WriteError(f"labels must be a (T, H, W) array, got shape {labels.shape}")
    if labels.dtype != bool and labels.dtype.kind not in "ui":
        raise WriteError(f"labels must hold integer label ids, got dtype {labels.dtype}")
    return labels


def _check_stem(name: object, what: str) -> str:
    if (
        not isinstance(name, str)
        or not name
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
    ):
        raise WriteError(
            f"invalid {what} {name!r}: must be a non-empty string without path separators "
            "that does not start with '.'"
        )
    return name


def _check_names(frame_names: Sequence[str] | None, n_frames: int) -> list[str]:
    if frame_names is None:
        return default_frame_names(n_frames)
    names = [_check_stem(name, "frame name") for name in frame_names]
    if len(names) != n_frames:
        raise WriteError(f"got {len(names)} frame names for {n_frames} frames of labels")
    if len(set(names)) != len(names):
        raise WriteError("frame names must be unique")
    return names


def _check_indices(frames: Iterable[int] | None, n_frames: int) -> list[int]:
    if frames is None:
        return list(range(n_frames))
    indices = sorted({int(i) for i in frames})
    bad = [i for i in indices if not 0 <= i < n_frames]
    if bad:
        raise WriteError(f"frame indices {bad} are out of range for {n_frames} frames")
    return indices


def _check_label_values(
    labels: np.ndarray, indices: list[int], names: list[str], valid: set[int] | None
) -> None:
    for index in indices:
        frame = labels[index]
        if frame.size == 0:
            continue
        low, high = int(frame.min()), int(frame.max())
        if low < 0 or high > 255:
            raise WriteError(
                f"frame {names[index]!r}: label ids must lie in 0..255 for DAVIS annotations, "
                f"found {low}..{high}"
            )
        if valid is not None:
            present = np.flatnonzero(np.bincount(frame.ravel().astype(np.intp, copy=False)))
            bad = sorted(int(i) for i in present if int(i) not in valid)
            if bad:
                raise WriteError(
                    f"frame {names[index]!r}: label ids {bad} are not among the classes "
                    f"(valid ids: {sorted(valid)})"
                )


def _normalize_classes(classes: Mapping[int, str] | Sequence[str]) -> dict[int, str]:
    if isinstance(classes, Mapping):
        items = list(classes.items())
    elif isinstance(classes, Sequence) and not isinstance(classes, str):
        items = list(enumerate(classes))
    else:
        raise WriteError(f"classes must be a dict {{id: name}} or a list of names, got {classes!r}")
    result: dict[int, str] = {}
    for key, name in items:
        try:
            class_id = int(key)
        except (TypeError, ValueError):
            class_id = -1
        if class_id < 0 or not isinstance(name, str) or class_id in result:
            raise WriteError(f"invalid class entry {key!r}: {name!r} in {classes!r}")
        result[class_id] = name
    return result


def _existing_classes(
    path: Path, reader: Callable[[Path], dict[int, str]] = read_classes
) -> dict[int, str] | None:
    if not path.exists():
        return None
    try:
        return reader(path)
    except ReadError as exc:
        raise WriteError(f"{path}: existing classes file is unreadable ({exc})", path=path) from exc


def _write_classes(path: Path, classes: dict[int, str], *, as_list: bool = False) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{path.parent}: could not create folder ({exc})", path=path) from exc
    items = sorted(classes.items())
    content = [v for _, v in items] if as_list else {str(k): v for k, v in items}
    text = json.dumps(content, indent=2)
    with atomic_path(path) as temp:
        temp.write_text(text + "\n", encoding="utf-8")


def _check_images(images: np.ndarray, label_shape: tuple[int, ...]) -> np.ndarray:
    images = np.asarray(images)
    grey = images.ndim == 3 and images.dtype in (np.uint8, np.uint16)
    colour = images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8
    if not (grey or colour):
        raise WriteError(
            f"images must be (T, H, W) uint8/uint16 or (T, H, W, 3) uint8, got {images.shape} "
            f"{images.dtype}"
        )
    if images.shape[:3] != tuple(label_shape):
        raise WriteError(
            f"images have shape {images.shape[:3]} (T, H, W) but labels have {label_shape}"
        )
    return images


def _check_no_clash(frame_dir: Path, names: list[str]) -> None:
    """Refuse to add ``<name>.png`` next to an existing ``<name>.jpg`` (duplicate frame)."""
    if not frame_dir.is_dir():
        return
    wanted = set(names)
    for path in list_image_files(frame_dir, IMAGE_SUFFIXES):
        if path.stem in wanted and path.suffix.lower() != ".png":
            raise WriteError(
                f"{path}: frame {path.stem!r} already exists with another extension; writing "
                f"{path.stem}.png would duplicate it",
                path=path,
            )


def _check_frames_exist(frame_dir: Path, names: list[str]) -> None:
    if not frame_dir.is_dir():
        logger.warning(
            "%s does not exist; the dataset has no frames for its annotations", frame_dir
        )
        return
    stems = {p.stem for p in list_image_files(frame_dir, IMAGE_SUFFIXES)}
    missing = [name for name in names if name not in stems]
    if missing:
        raise WriteError(
            f"{frame_dir}: has no frames named {missing[:5]} for the annotations to be written; "
            "pass images= or matching frame_names",
            path=frame_dir,
        )


def _write_images(frame_dir: Path, images: np.ndarray, names: list[str]) -> None:
    try:
        frame_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{frame_dir}: could not create folder ({exc})", path=frame_dir) from exc
    for index, name in enumerate(names):
        image = Image.fromarray(np.ascontiguousarray(images[index]))
        with atomic_path(frame_dir / f"{name}.png") as temp:
            image.save(temp, **_PNG_OPTIONS)


def write_float_maps(
    out_dir: str | Path, maps: np.ndarray, *, frame_names: Sequence[str] | None = None
) -> list[Path]:
    """Write ``(T, H, W)`` float maps (e.g. per-pixel uncertainty) as one float32 TIFF per
    frame, ``out_dir/<name>.tif``, atomically. Returns the written paths."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or not np.issubdtype(maps.dtype, np.floating):
        raise WriteError(f"{out_dir}: expected (T, H, W) float maps, got {maps.shape} {maps.dtype}",
                         path=Path(out_dir))
    names = _check_names(frame_names, maps.shape[0])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in zip(names, maps, strict=True):
        path = out / f"{name}.tif"
        with atomic_path(path) as temp:
            tifffile.imwrite(temp, frame.astype(np.float32), compression="zlib")
        written.append(path)
    return written
