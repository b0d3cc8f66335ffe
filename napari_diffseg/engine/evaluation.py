"""Evaluate a model on the annotated frames of a dataset: per-class Dice, IoU, HD95."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from napari_diffseg.engine.inference import SegmentOptions, iter_segment
from napari_diffseg.engine.metrics import EvaluationReport, evaluate_frames
from napari_diffseg.engine.postprocess import clean_video_runs, video_step_applies


def evaluate_videos(
    model,
    checkpoint,
    videos,
    options: SegmentOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    wire_tracking: bool = False,
    static: bool = True,
) -> EvaluationReport:
    """Segment the annotated frames of each :class:`napari_diffseg.io.Video` and compare them
    with the annotations (frames of every size; classes from the checkpoint and the data).

    `progress(done, total)` is called after every batch of frames, counting annotated frames
    over all the videos.

    Each annotated frame is segmented inside its whole video, as `segment` and the dock do
    it: normalised with the video's intensity range and, for a model with temporal context,
    beside its real neighbours (not the next annotated frame), so the scores are those of
    the labels a user gets.

    With `wire_tracking` (and a vessel class) every frame of each annotated video is
    segmented and the whole-video step of `segment` and the dock run over it
    (:func:`~napari_diffseg.engine.postprocess.clean_video_runs`: static vessel dropped
    unless `static` is False, the guidewire tracked where the classes have one) before the
    annotated frames are scored; `progress` then counts all those frames."""
    preds, targets = [], []
    classes: dict[int, str] = {int(k): v for k, v in checkpoint.classes.items()}
    whole = wire_tracking and video_step_applies(checkpoint.classes, static=static)
    scored = [v for v in videos if v.labels is not None and v.labelled]
    done = 0
    total = sum(len(v.frames) if whole else len(v.labelled) for v in scored)
    for video in scored:
        idx = list(video.labelled)
        todo = list(range(len(video.frames))) if whole else idx
        labels = {}
        for chunk in iter_segment(model, video.frames, indices=todo,
                                  normalisation=checkpoint.normalisation,
                                  timesteps=int(checkpoint.schedule["timesteps"]),
                                  options=options):
            labels.update(zip(chunk.indices.tolist(), chunk.labels, strict=True))
            if progress is not None:  # frames done over all the videos, after each batch
                progress(done + chunk.done, total)
        if whole:
            done_labels = np.stack([labels[i] for i in todo])
            clean_video_runs(video.frames, done_labels, range(len(todo)), checkpoint.classes,
                             static=static).apply(done_labels)
            labels.update(zip(todo, done_labels, strict=True))
        preds.extend(labels[i] for i in idx)
        for k, v in (video.classes or {}).items():
            classes.setdefault(int(k), v)
        targets.extend(np.asarray(video.labels[i]) for i in idx)
        done += len(todo)
    if not preds:
        raise ValueError("no annotated frames to evaluate on")
    shapes = {p.shape for p in preds}
    if len(shapes) == 1:
        return evaluate_frames(np.stack(preds), np.stack(targets), classes)
    # frames of several sizes: pad to one canvas with a label no class uses, then ignore it
    h = max(s[0] for s in shapes)
    w = max(s[1] for s in shapes)
    pad = [_pad(p, h, w) for p in preds]
    tgt = [_pad(t, h, w) for t in targets]
    return evaluate_frames(np.stack(pad), np.stack(tgt), classes)


def _pad(a: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w), dtype=a.dtype)
    out[: a.shape[0], : a.shape[1]] = a
    return out
