"""Sequences with sparse labels, ready for training: normalised frames, labelled and unlabelled.

Numpy only. A dataset is read with :mod:`napari_diffseg.io` (DAVIS or MOSXAV layout); frames
with an annotation file are labelled, all others unlabelled, as in MOSXAV's training set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: How frames are mapped to the network's input range; stored in checkpoints. An optional
#: ``"clahe"`` key (clip limit, e.g. 0.01) adds contrast-limited adaptive histogram
#: equalisation per frame after the percentile mapping; absent or None (old checkpoints,
#: and the default) means none.
DEFAULT_NORMALISATION = {"method": "percentile", "low": 1.0, "high": 99.0}
#: Label value of a pixel whose class is unknown (noisy pseudo-labels): training ignores it.
#: Never a class id (classes are 0..254).
IGNORE_LABEL = 255


def normalisation_range(
    frames: np.ndarray, normalisation: dict | None = None
) -> tuple[float, float]:
    """(low, high) intensities of a whole video (T, H, W[, 3]) that map to -1 and +1: its own
    percentiles (robust to bit depth and windowing), from a subsample of at most ~2 M values
    so that a long cine is never converted to float as a whole."""
    norm = normalisation or DEFAULT_NORMALISATION
    if norm.get("method") != "percentile":
        raise ValueError(f"unknown normalisation method {norm.get('method')!r}")
    x = np.asarray(frames)
    if x.ndim >= 3 and x.shape[0] > 1:
        per_frame = max(x[0].size, 1)
        frame_step = max(1, int(np.ceil(x.shape[0] * per_frame / 8_000_000)))
        x = x[::frame_step]
    step = max(1, x.size // 2_000_000)
    sample = x.reshape(-1)[::step]
    lo, hi = np.percentile(sample, [norm["low"], norm["high"]])
    return float(lo), float(hi)


def apply_normalisation(frames: np.ndarray, low: float, high: float,
                        clahe: float | None = None) -> np.ndarray:
    """Map frames of any dtype to float32 with `low` -> -1 and `high` -> +1, clipped to
    [-1.5, 1.5]; same shape as the input. ``clahe`` (clip limit) then equalises each frame
    (H, W[, 3]) adaptively (:func:`skimage.exposure.equalize_adapthist` on [-1, 1] mapped to
    [0, 1]) and maps it back to [-1, 1]."""
    scale = 2.0 / max(float(high - low), 1e-6)
    out = (np.asarray(frames).astype(np.float32) - np.float32(low)) * np.float32(scale) - 1.0
    out = np.clip(out, -1.5, 1.5, out=out)
    if clahe:
        out = _clahe(out, float(clahe))
    return out


def _clahe(images: np.ndarray, clip_limit: float) -> np.ndarray:
    """CLAHE of normalised frames (..., H, W) or (..., H, W, 3) in about [-1, 1], per frame."""
    from skimage.exposure import equalize_adapthist

    x = np.clip(0.5 * (images + 1.0), 0.0, 1.0)
    colour = x.ndim >= 3 and x.shape[-1] == 3
    frames = x.reshape((-1, *x.shape[-3:]) if colour else (-1, *x.shape[-2:]))
    out = np.stack([equalize_adapthist(f, clip_limit=clip_limit) for f in frames])
    return (2.0 * out.reshape(x.shape) - 1.0).astype(np.float32)


def normalise_frames(frames: np.ndarray, normalisation: dict | None = None) -> np.ndarray:
    """(T, H, W) or (T, H, W, 3) frames of any dtype -> float32 in about [-1, 1], using the
    video's own low/high intensity percentiles (robust to bit depth and windowing)."""
    lo, hi = normalisation_range(frames, normalisation)
    return apply_normalisation(frames, lo, hi, (normalisation or {}).get("clahe"))


def normalise_gray(frames: np.ndarray, normalisation: dict | None = None) -> np.ndarray:
    """:func:`normalise_frames`, then colour (T, H, W, 3) averaged to gray: (T, H, W) float32,
    what the network takes."""
    out = normalise_frames(frames, normalisation)
    return out.mean(axis=-1) if out.ndim == 4 else out


def context_indices(indices, count: int, context_frames: int) -> np.ndarray:
    """For frame indices (N,) of a video of `count` frames -> (N, 1 + 2 c) indices of what a
    model with `context_frames` c sees: the frame, then t - 1, t + 1, t - 2, t + 2, ...; a
    neighbour beyond the first or last frame is the frame itself (as for a single image)."""
    idx = np.asarray(indices, dtype=int).reshape(-1)
    cols = [idx]
    for d in range(1, context_frames + 1):
        for step in (-d, d):
            j = idx + step
            cols.append(np.where((j >= 0) & (j < count), j, idx))
    return np.stack(cols, axis=1)


def context_stack(frames: np.ndarray, context_frames: int, indices=None) -> np.ndarray:
    """Normalised frames (T, H, W) -> (N, 1 + 2 c, H, W) stacks of :func:`context_indices`
    for `indices` (default all); c = 0 gives (N, H, W), the frames themselves."""
    frames = np.asarray(frames)
    if context_frames <= 0:
        return frames if indices is None else frames[np.asarray(indices, dtype=int)]
    idx = np.arange(frames.shape[0]) if indices is None else np.asarray(indices, dtype=int)
    return frames[context_indices(idx, frames.shape[0], context_frames)]


@dataclass
class SparseDataset:
    """Frames of one or more sequences, split into labelled and unlabelled frames.

    images: labelled frames, each (H, W) float32 normalised; labels: their (H, W) uint8 ids
    (:data:`IGNORE_LABEL` where the class is unknown, e.g. in fused pseudo-labels);
    unlabelled: the other frames, each (H, W) float32 normalised.
    context_frames: c > 0 when each image is a (1 + 2 c, H, W) stack of the frame and its
    neighbours (:func:`context_stack`), for a model with temporal context.
    unlabelled_anchors: optional, one per unlabelled frame: None, or (labels (H, W) uint8,
    confidence (H, W) float) warped from the nearest verified frame of the video (the
    anchors of semi-supervised training, :func:`napari_diffseg.engine.propagate`).
    """

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    unlabelled: list[np.ndarray] = field(default_factory=list)
    classes: dict[int, str] = field(default_factory=dict)
    sequences: list[str] = field(default_factory=list)
    source: str = ""
    context_frames: int = 0
    unlabelled_anchors: list = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        ids = set(self.classes)
        for lab in self.labels:
            ids.update(np.unique(lab).tolist())
        ids.discard(IGNORE_LABEL)
        return max(ids) + 1 if ids else 1

    def summary(self) -> dict:
        return {
            "source": self.source,
            "sequences": len(self.sequences),
            "labelled_frames": len(self.images),
            "unlabelled_frames": len(self.unlabelled),
            "context_frames": self.context_frames,
            "anchored_frames": sum(a is not None for a in self.unlabelled_anchors),
            "classes": {str(k): v for k, v in self.classes.items()},
        }


def dataset_from_videos(
    videos, source: str = "", normalisation: dict | None = None, context_frames: int = 0
) -> SparseDataset:
    """Build a :class:`SparseDataset` from :class:`napari_diffseg.io.Video` objects that carry
    labels (DAVIS / MOSXAV sequences); `context_frames` > 0 stacks each frame with its
    neighbours (for a model with temporal context)."""
    data = SparseDataset(source=source, context_frames=context_frames)
    for video in videos:
        if video.labels is None:
            raise ValueError(f"{video.meta.path}: has no annotations to train on")
        frames = normalise_gray(video.frames, normalisation)  # colour kept: train on gray
        labelled = set(video.labelled)
        stacks = context_stack(frames, context_frames)
        for i in range(frames.shape[0]):
            if i in labelled:
                data.images.append(stacks[i])
                data.labels.append(np.asarray(video.labels[i], dtype=np.uint8))
            else:
                data.unlabelled.append(stacks[i])
        data.sequences.append(video.sequence or video.meta.path.name)
        for k, v in (video.classes or {}).items():
            data.classes.setdefault(int(k), v)
    if not data.images:
        raise ValueError(f"{source}: no annotated frames found to train on")
    data.classes.setdefault(0, "background")
    logger.info(
        "dataset %s: %d sequences, %d labelled and %d unlabelled frames",
        source, len(data.sequences), len(data.images), len(data.unlabelled),
    )
    return data


def load_dataset(path: str | Path, split: str | None = None,
                 context_frames: int = 0) -> SparseDataset:
    """Read a DAVIS or MOSXAV dataset (root, MOSXAV split folder, or one sequence folder)."""
    from napari_diffseg.io import ReadError, detect_format, read_sequences

    path = Path(path)
    fmt = detect_format(path)
    if fmt not in ("davis", "mosxav"):
        raise ReadError(
            f"{path}: not a DAVIS or MOSXAV dataset (found {fmt or 'nothing readable'}); "
            "training needs JPEGImages/<sequence>/ frames with Annotations",
            path=path,
        )
    return dataset_from_videos(read_sequences(path, split=split), source=str(path),
                               context_frames=context_frames)
