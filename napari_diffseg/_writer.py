"""npe2 writer hooks for Labels layers: a multi-page TIFF, or DAVIS annotations.

The DAVIS writer is a directory writer (no file extension). For a target folder ``OUT``:
- if ``OUT``'s parent is named ``Annotations``, ``OUT`` is the sequence folder and
  ``classes.json`` goes to the dataset root above ``Annotations``;
- if ``OUT``'s parent is named ``Annotations_Semantic``, or the layer was read from a MOSXAV
  download, the masks are written in MOSXAV's layout (``Annotations_Semantic/<sequence>/`` and
  ``labels.json``) in the encoding the source used (class indices or RGB colours);
- otherwise ``OUT`` is a dataset root: ``OUT/Annotations/<sequence>/<frame>.png`` and
  ``OUT/classes.json``.

Only annotated frames are written: the frames the source had annotations for plus every frame
with a non-zero label, so unlabelled frames never turn into "all background" annotations.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from napari_diffseg.io import write_davis, write_mosxav, write_tiff


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer (T, H, W) or (H, W) as a multi-page TIFF."""
    labels = _as_stack(data)
    return [str(write_tiff(path, labels))]


def write_labels_davis(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as DAVIS palette PNGs (+ classes.json); see the module docstring."""
    labels = _as_stack(data)
    layer_meta = meta.get("metadata") or {}
    frame_names = layer_meta.get("frame_names")
    if frame_names is not None and len(frame_names) != labels.shape[0]:
        frame_names = None
    classes = layer_meta.get("classes") or None
    if classes:
        classes = {int(k): str(v) for k, v in classes.items()}
    frames = annotated_frames(labels, layer_meta.get("labelled") or [])

    out = Path(path)
    if out.parent.name == "Annotations_Semantic" or layer_meta.get("source_format") == "mosxav":
        if out.parent.name == "Annotations_Semantic":
            root, sequence = out.parent.parent, out.name
        else:
            root = out
            sequence = layer_meta.get("sequence") or _safe_name(meta.get("name") or "sequence")
        encoding = (layer_meta.get("extra") or {}).get("mask_encoding")
        write_mosxav(root, sequence, labels, frame_names=frame_names, frames=frames,
                     classes=classes, encoding="rgb" if encoding == "rgb" else "index")
        return [str(root / "Annotations_Semantic" / sequence)]
    if out.parent.name == "Annotations":  # OUT is the sequence folder of a dataset
        root, sequence = out.parent.parent, out.name
    else:  # OUT is a dataset root
        root = out
        sequence = layer_meta.get("sequence") or _safe_name(meta.get("name") or "sequence")
    write_davis(root, sequence, labels, frame_names=frame_names, frames=frames, classes=classes)
    return [str(root / "Annotations" / sequence)]


def annotated_frames(labels: np.ndarray, labelled: list[int]) -> list[int]:
    """Frame indices worth writing: previously annotated ones and any with a non-zero label."""
    painted = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    keep = {int(i) for i in labelled if 0 <= int(i) < labels.shape[0]} | set(painted.tolist())
    return sorted(keep)


def _as_stack(data: Any) -> np.ndarray:
    labels = np.asarray(data)
    if labels.ndim == 2:
        labels = labels[np.newaxis]
    return labels


def _safe_name(name: str) -> str:
    """A layer name turned into a folder name ("v07 labels" -> "v07")."""
    name = re.sub(r"\s+labels$", "", name.strip())
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "sequence"
