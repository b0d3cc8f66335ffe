"""Segmentation metrics on label images: Dice, IoU and the 95th-percentile Hausdorff distance.

Conventions, used everywhere in this module:

* A class that is absent from both the prediction and the target of a frame has no defined
  score there: Dice, IoU and HD95 are NaN for that frame and are left out of every mean
  (``nanmean``), instead of counting as a perfect 1.
* If a class is present in exactly one of the two masks, HD95 is the image diagonal in
  ``spacing`` units (the largest distance the image can hold), so that means stay finite
  while still penalising a missed or hallucinated structure heavily.
* ``spacing`` is the pixel size as ``(row, column)`` i.e. ``(dy, dx)``; HD95 is in those units.

Only numpy and scipy are used here, so the metrics can run anywhere torch is not needed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

METRICS = ("dice", "iou", "hd95")
BACKGROUND = 0
_NAN = float("nan")


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the finite (non-NaN) values; NaN (without a warning) when there are none."""
    kept = [v for v in values if not math.isnan(v)]
    return float(sum(kept) / len(kept)) if kept else _NAN


def dice_iou(
    pred: np.ndarray, target: np.ndarray, classes: Sequence[int]
) -> dict[int, tuple[float, float]]:
    """Per-class Dice and IoU of one label frame.

    Args:
        pred: (H, W) integer labels predicted.
        target: (H, W) integer labels of the reference.
        classes: the label values to score.

    Returns:
        ``{class: (dice, iou)}``; both NaN for a class absent from ``pred`` and ``target``.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {pred.shape} but target has shape {target.shape}")
    scores: dict[int, tuple[float, float]] = {}
    for label in classes:
        p = pred == label
        t = target == label
        p_count = int(np.count_nonzero(p))
        t_count = int(np.count_nonzero(t))
        if p_count + t_count == 0:
            scores[int(label)] = (_NAN, _NAN)
            continue
        intersection = int(np.count_nonzero(p & t))
        union = p_count + t_count - intersection
        scores[int(label)] = (2.0 * intersection / (p_count + t_count), intersection / union)
    return scores


def _boundary(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: mask pixels with a 4-neighbour outside the mask (image border counts)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(
    pred_mask: np.ndarray,
    target_mask: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0),
) -> float:
    """95th percentile of the symmetric surface distances between two masks.

    Boundary pixels are found by binary erosion; the distances from each boundary pixel of one
    mask to the nearest boundary pixel of the other (both directions, pooled) come from a
    Euclidean distance transform with ``sampling=spacing``.

    Args:
        pred_mask: (H, W) bool.
        target_mask: (H, W) bool.
        spacing: pixel size ``(dy, dx)``; the result is in these units.

    Returns:
        The distance; NaN when both masks are empty; the image diagonal
        ``hypot(H * dy, W * dx)`` when exactly one of them is empty.
    """
    pred_mask = np.asarray(pred_mask, dtype=bool)
    target_mask = np.asarray(target_mask, dtype=bool)
    if pred_mask.shape != target_mask.shape or pred_mask.ndim != 2:
        raise ValueError(
            f"expected two (H, W) masks of the same shape, got {pred_mask.shape} "
            f"and {target_mask.shape}"
        )
    sampling = tuple(float(s) for s in spacing)
    if len(sampling) != 2 or min(sampling) <= 0:
        raise ValueError(f"spacing must be two positive numbers (dy, dx), got {spacing!r}")

    pred_any = bool(pred_mask.any())
    target_any = bool(target_mask.any())
    if not pred_any and not target_any:
        return _NAN
    if pred_any != target_any:
        height, width = pred_mask.shape
        return float(math.hypot(height * sampling[0], width * sampling[1]))

    pred_edge = _boundary(pred_mask)
    target_edge = _boundary(target_mask)
    # distance of every pixel to the nearest boundary pixel of the other mask
    to_target = ndimage.distance_transform_edt(~target_edge, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=sampling)
    distances = np.concatenate([to_target[pred_edge], to_pred[target_edge]])
    return float(np.percentile(distances, 95))


@dataclass
class EvaluationReport:
    """Metrics of a set of frames.

    Attributes:
        per_class: class name -> ``{"dice", "iou", "hd95", "frames"}``: each metric is the mean
            over the frames where the class is present in the prediction or the target
            (NaN if none); ``"frames"`` counts those frames.
        mean: ``{"dice", "iou", "hd95"}`` averaged over the classes in ``per_class`` (the
            foreground classes unless the background was asked for), ignoring NaN.
        frames: number of frames evaluated.
    """

    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    frames: int = 0

    def to_dict(self) -> dict:
        """JSON-friendly copy: NaN becomes ``None``; ``frames`` counts are ints."""

        def clean(value: float) -> float | int | None:
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                return int(value)
            value = float(value)
            return None if math.isnan(value) else value

        return {
            "frames": int(self.frames),
            "per_class": {
                name: {key: clean(value) for key, value in scores.items()}
                for name, scores in self.per_class.items()
            },
            "mean": {key: clean(value) for key, value in self.mean.items()},
        }

    def format_table(self) -> str:
        """Aligned text table, one row per class and a final ``mean`` row (NaN shown as -)."""

        def number(value: float) -> str:
            return "-" if math.isnan(value) else f"{value:.4f}"

        header = ["class", "dice", "iou", "hd95", "frames"]
        rows = [
            [name] + [number(float(scores[key])) for key in METRICS] + [str(int(scores["frames"]))]
            for name, scores in self.per_class.items()
        ]
        rows.append(["mean"] + [number(float(self.mean[key])) for key in METRICS] + [""])
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        rule = "  ".join("-" * width for width in widths)
        lines = [line(header), rule]
        lines += [line(row) for row in rows[:-1]]
        lines += [rule, line(rows[-1]), f"({self.frames} frames)"]
        return "\n".join(lines)


def frame_scores(
    preds: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0),
) -> dict[int, dict[str, list[float]]]:
    """Dice, IoU and HD95 of each frame: ``{label: {"dice": [...], "iou": [...], "hd95":
    [...]}}``, one value per frame of the (N, H, W) stacks (NaN where the label is in neither
    mask), before any mean: what :func:`evaluate_frames` averages, and what a bootstrap over
    frames or videos resamples."""
    per_frame: dict[int, dict[str, list[float]]] = {
        int(label): {key: [] for key in METRICS} for label in labels
    }
    for pred, target in zip(preds, targets, strict=True):
        overlap = dice_iou(pred, target, labels)
        for label in per_frame:
            dice, iou = overlap[label]
            per_frame[label]["dice"].append(dice)
            per_frame[label]["iou"].append(iou)
            per_frame[label]["hd95"].append(hausdorff95(pred == label, target == label, spacing))
    return per_frame


def evaluate_frames(
    preds: np.ndarray,
    targets: np.ndarray,
    classes: Mapping[int, str],
    spacing: Sequence[float] = (1.0, 1.0),
    ignore_background: bool = True,
) -> EvaluationReport:
    """Dice, IoU and HD95 per class over a stack of frames.

    Args:
        preds: (N, H, W) integer labels predicted (a single (H, W) frame is accepted).
        targets: (N, H, W) integer reference labels, same shape as ``preds``.
        classes: label value -> class name; label ``0`` is the background.
        spacing: pixel size ``(dy, dx)`` for HD95.
        ignore_background: leave label 0 out of the report (and so out of the means).

    Returns:
        An :class:`EvaluationReport`; see the module docstring for the NaN conventions.
    """
    preds = np.asarray(preds)
    targets = np.asarray(targets)
    if preds.shape != targets.shape:
        raise ValueError(f"preds have shape {preds.shape} but targets have shape {targets.shape}")
    if preds.ndim == 2:
        preds, targets = preds[None], targets[None]
    if preds.ndim != 3:
        raise ValueError(f"expected (N, H, W) label stacks, got shape {preds.shape}")

    labels = [
        int(label) for label in classes if not (ignore_background and int(label) == BACKGROUND)
    ]
    per_frame = frame_scores(preds, targets, labels, spacing)

    per_class: dict[str, dict[str, float]] = {}
    for label in labels:
        values = per_frame[label]
        scores: dict[str, float] = {key: _nanmean(values[key]) for key in METRICS}
        scores["frames"] = sum(not math.isnan(v) for v in values["dice"])
        per_class[str(classes[label])] = scores

    mean = {key: _nanmean([scores[key] for scores in per_class.values()]) for key in METRICS}
    report = EvaluationReport(per_class=per_class, mean=mean, frames=int(preds.shape[0]))
    logger.debug("evaluated %d frames: %s", report.frames, report.mean)
    return report
