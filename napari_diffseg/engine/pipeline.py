"""A video segmented as the dock segments it, in one engine generator.

:func:`segment_video` is the sequence the dock's Segment button, the CLI's ``segment`` and the
fine-tuning benchmark share: fit the model's temperature on the verified frames (when there
are any), segment the frames batch by batch, then the whole-video step
(:func:`~napari_diffseg.engine.postprocess.clean_video_runs`: static vessel, guidewire
tracking) with the user's frames as evidence. Each caller only decides what to do with what
it yields: the dock writes it into its layers, the CLI to disk, the benchmark scores it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from napari_diffseg.engine.calibration import (
    Calibrated,
    calibration_frames,
    fit_video_temperature,
)
from napari_diffseg.engine.inference import SegmentChunk, SegmentOptions, iter_segment
from napari_diffseg.engine.postprocess import VideoCleanup, clean_video_runs, video_step_applies


def segment_video(
    model,
    frames: np.ndarray,
    *,
    classes: dict,
    normalisation: dict,
    timesteps: int,
    options: SegmentOptions,
    indices=None,
    verified: tuple | None = None,
    user_labels: tuple | None = None,
    static: bool = True,
    wire: bool = True,
    should_stop: Callable[[], bool] | None = None,
    labels: np.ndarray | None = None,
) -> Iterator[Calibrated | SegmentChunk | VideoCleanup]:
    """Segment `indices` (default all) of `frames` (T, H, W[, 3]) with `model` and yield:

    * :class:`~napari_diffseg.engine.calibration.Calibrated`, first, when `verified` (frame
      indices, their labels (n, H, W)) is given: the temperature fitted on up to
      :data:`~napari_diffseg.engine.calibration.CALIBRATION_FRAMES` of them, spread over the
      video, then used for every frame;
    * one :class:`~napari_diffseg.engine.inference.SegmentChunk` per batch, the raw labels
      (specks under ``options.min_component`` removed);
    * :class:`~napari_diffseg.engine.postprocess.VideoCleanup`, last, when the `classes` call
      for the whole-video step (`static`: the static-vessel step; `wire`: the guidewire
      tracking): the frames it changes and their new labels. `user_labels` (frame indices,
      their labels) are the frames the user verified or painted: evidence for the step
      (a wire the user drew is the video's wire), never changed.

    `labels`: a (T, H, W) uint8 array the caller keeps the video's labels in; the raw labels
    of each batch and the `user_labels` are written into it, and the whole-video step reads
    it, so a long cine is not held twice (default: a new array when the step applies).

    `should_stop` is polled between diffusion steps; when it turns true, the segmentation
    raises :class:`~napari_diffseg.engine.inference.Cancelled` and nothing more is yielded
    (a stop after the last batch skips the whole-video step).
    """
    shape = np.shape(frames)[:3]
    stopped = should_stop or (lambda: False)
    if verified is not None and len(verified[0]):
        reference = np.zeros(shape, dtype=np.uint8)
        reference[[int(i) for i in verified[0]]] = verified[1]
        cal = calibration_frames(verified[0])
        temperature = fit_video_temperature(model, frames, reference, cal,
                                            normalisation=normalisation, timesteps=timesteps,
                                            options=options)
        del reference
        options = replace(options, temperature=temperature)
        yield Calibrated(float(temperature), cal)
        if stopped():
            return
    todo = list(range(shape[0])) if indices is None else [int(i) for i in indices]
    keep = video_step_applies(classes, static=static, wire=wire)
    if labels is None and keep:
        labels = np.zeros(shape, dtype=np.uint8)
    for chunk in iter_segment(model, frames, normalisation=normalisation, timesteps=timesteps,
                              options=options, indices=todo, should_stop=should_stop):
        if labels is not None:
            labels[chunk.indices] = chunk.labels
        yield chunk
    if not keep or stopped():
        return
    trusted: list[int] = []
    if user_labels is not None and len(user_labels[0]):
        trusted = [int(i) for i in user_labels[0]]
        labels[trusted] = user_labels[1]
    yield clean_video_runs(frames, labels, todo, classes, trusted=trusted, static=static,
                           wire=wire)
