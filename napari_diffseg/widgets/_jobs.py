"""The long-running work the dock launches, as generator functions for napari's
``thread_worker``: each is one engine call, yielding progress so that ``worker.quit()`` and the
Cancel/Stop buttons act quickly. No Qt here."""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the engine's message, re-exported for the dock (numpy and scipy only: no torch at import)
from napari_diffseg.engine.calibration import Calibrated  # noqa: F401

logger = logging.getLogger(__name__)

#: niceness of the dock's worker threads (0 = normal, 19 = lowest): background work yields the
#: CPU to the UI thread. 5, not 10: on an idle machine both keep the window answering, but when
#: other programs load the CPU at normal priority, 10 left a segmentation a tenth of the CPU
#: (62 s instead of 5-14 s for 6 frames in benchmarks/bench_event_loop.py) for no clear gain.
BACKGROUND_NICENESS = 5


@dataclass
class ModelLoaded:
    """First item a segmentation job yields: what the model predicts and where it runs."""

    classes: dict[int, str]
    device: str
    path: str


@dataclass
class WireTracked:
    """Yielded last by a segmentation job that ran to its end: the frames the whole-video
    step changed (:func:`~napari_diffseg.engine.postprocess.clean_video_runs`: vessel that
    was already there before the contrast dropped, the guidewire kept where the contrast
    bolus hides it and dropped where no frame shows it outside the vessel), their new labels
    (k, H, W), the frames that gained wire pixels (``gained``), lost a wire (``dropped``) or
    lost static vessel (``static``); the dock writes them where the user has not."""

    indices: list[int]
    labels: np.ndarray
    gained: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    static: list[int] = field(default_factory=list)


def wire_tracking_update(done) -> WireTracked | None:
    """The dock's message for what the whole-video step did
    (:class:`~napari_diffseg.engine.postprocess.VideoCleanup`); None when no frame changes."""
    if not done.changed:
        return None
    order = sorted(done.changed)
    return WireTracked(order, np.stack([done.changed[f] for f in order]),
                       list(done.kept_hidden), list(done.dropped), list(done.static))


def lower_this_threads_priority(niceness: int = BACKGROUND_NICENESS) -> bool:
    """Make the calling worker thread, and the torch/OpenMP threads it starts, yield the CPU
    to napari's UI thread (Linux: niceness is per thread and inherited by threads it creates).
    On a 2-core machine a segmentation's compute threads otherwise starve the UI thread and
    the window stutters for 200-500 ms (benchmarks/bench_event_loop.py). Not undone: the
    worker pool's threads only ever run background work. True if it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < niceness:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
        return True
    except OSError as exc:  # not allowed here: keep going at the normal priority
        logger.debug("could not lower the worker's priority: %s", exc)
        return False


def devices_job() -> tuple[str, list[str]]:
    """The devices torch can use, found in a worker thread: importing torch takes seconds and
    must not freeze napari's window when the dock opens (it also warms the import for the
    first segmentation). Returns (description of the "auto" choice, device names)."""
    from napari_diffseg.engine.device import (
        available_devices,
        device_description,
        resolve_device,
    )

    lower_this_threads_priority()
    return device_description(resolve_device("auto")), available_devices()


def segment_job(
    model_path: str | Path,
    frames: np.ndarray,
    indices: list[int],
    *,
    device: str = "auto",
    steps: int = 4,
    samples: int = 4,
    batch_size: int | None = None,
    seed: int = 0,
    min_component: int | None = None,
    review: str = "samples",
    calibrate: tuple[list[int], np.ndarray] | None = None,
    user_labels: tuple[list[int], np.ndarray] | None = None,
    static: bool = True,
    stop: threading.Event | None = None,
):
    """Load the model, yield :class:`ModelLoaded`, then what
    :func:`~napari_diffseg.engine.pipeline.segment_video` yields: :class:`Calibrated`, one
    :class:`~napari_diffseg.engine.inference.SegmentChunk` per batch of frames and, last,
    :class:`WireTracked` when the whole-video step changes a frame.
    frames: (T, H, W[, 3]) raw video; indices: frames to segment; batch_size None: the
    engine's default for the device (one frame at a time on a CPU, so results stream frame by
    frame; 8 on a GPU). review: "samples" or "tta", the uncertainty the review follows
    (:func:`~napari_diffseg.engine.inference.review_options`). calibrate: (verified frame
    indices, their labels (n, H, W)): the model's temperature is fitted on up to 4 of them
    first (yields :class:`Calibrated`), so that its probabilities mean what they say on this
    video; the labels do not change, the uncertainty and the frame scores do. user_labels: (frame
    indices, their labels (n, H, W)) of the frames the user verified or painted: the wire
    tracking after the last frame reads them as evidence (a wire the user drew is the
    video's wire, and is carried under the contrast) and never changes them. static: False
    leaves out the static-vessel step (the dock's switch; ``segment --keep-static``)."""
    from napari_diffseg.engine.device import device_description
    from napari_diffseg.engine.inference import (
        DEFAULT_MIN_COMPONENT,
        Cancelled,
        load_for_inference,
        review_options,
    )
    from napari_diffseg.engine.pipeline import segment_video
    from napari_diffseg.engine.postprocess import VideoCleanup

    lower_this_threads_priority()
    if min_component is None:
        min_component = DEFAULT_MIN_COMPONENT
    model, ckpt = load_for_inference(model_path, device)
    dev = next(model.parameters()).device
    yield ModelLoaded(dict(ckpt.classes), device_description(dev), str(model_path))
    options = review_options(review, steps=steps, samples=samples, batch_size=batch_size,
                             seed=seed, min_component=min_component)
    try:
        for item in segment_video(
            model, frames, classes=ckpt.classes, normalisation=ckpt.normalisation,
            timesteps=int(ckpt.schedule.get("timesteps", 10)), options=options,
            indices=indices, verified=calibrate, user_labels=user_labels, static=static,
            should_stop=None if stop is None else stop.is_set,
        ):
            if isinstance(item, VideoCleanup):
                item = wire_tracking_update(item)
                if item is None:
                    continue
            yield item
    except Cancelled:  # a normal end for the worker (superqt treats RuntimeErrors specially)
        return


def save_job(snapshot: dict) -> Path:
    """Write an :meth:`AnnotationSession.snapshot` to its project folder."""
    from napari_diffseg.io.project import save_project

    return save_project(
        snapshot["folder"], snapshot["state"], snapshot["labels"], snapshot["uncertainty"],
        changed=snapshot["changed"],
    )


@dataclass
class FinetuneControl:
    """Lets the dock pause/stop the training process a job started."""

    process: object | None = None
    stop_requested: bool = False
    events: list = field(default_factory=list)

    def stop(self) -> None:
        self.stop_requested = True
        if self.process is not None:
            self.process.stop()

    def pause(self, paused: bool) -> None:
        if self.process is not None:
            self.process.pause() if paused else self.process.resume()


def finetune_job(
    frames: np.ndarray,
    labels: np.ndarray,
    verified: list[int],
    *,
    classes: dict[int, str],
    init: str | None,
    output: str | Path,
    options: dict,
    val_fraction: float,
    extra_videos: list[str] = (),
    control: FinetuneControl,
    threads: int | None = None,
    refit: bool = True,
):
    """Build the training set (verified frames labelled, every other frame and the extra
    videos unlabelled), run the training in a child process and yield its events (dicts:
    validation_frames (the held-out verified frames) / started / validation_before / progress
    / checkpoint / refit / done / error). `refit`: the run ends with the last stage on every
    verified frame (engine.finetune.finetune_request's ``refit_share``)."""
    from napari_diffseg.engine.defaults import FINETUNE_REFIT_SHARE
    from napari_diffseg.engine.finetune import (
        FinetuneProcess,
        finetune_request,
        held_out_frames,
    )
    from napari_diffseg.engine.propagate import PropagationCancelled
    from napari_diffseg.io import read

    extra = []
    for path in extra_videos:
        yield {"kind": "status", "message": f"reading {Path(path).name}"}
        extra.append(read(path).frames)
        if control.stop_requested:
            return
    # the same frames build_finetune_data holds out (same default seed)
    yield {"kind": "validation_frames", "frames": held_out_frames(verified, val_fraction)}
    if options.get("anchor_frames"):
        yield {"kind": "status", "message": "carrying the verified frames' labels to their "
                                            f"neighbours (±{options['anchor_frames']} "
                                            "frames)…"}
    try:
        request = finetune_request(
            frames, labels, verified, classes=classes, init=init, output=output,
            options=options, val_fraction=val_fraction, extra_unlabelled=extra,
            threads=threads, should_stop=lambda: control.stop_requested,
            refit_share=FINETUNE_REFIT_SHARE if refit else 0.0)
    except PropagationCancelled:
        return
    process = FinetuneProcess(request)
    control.process = process
    if control.stop_requested:
        return
    process.start()
    yield {"kind": "status", "message": "training process started"}
    yield from process.events()


def adapt_job(
    frames: np.ndarray,
    verified: dict[int, np.ndarray],
    *,
    init: str,
    output: str | Path,
    iterations: int,
    control: FinetuneControl,
    threads: int | None = None,
    context_frames: int = 0,
    anchor_frames: int = 0,
):
    """Adapt the model ``init`` to this video (0 or more verified frames) in the fine-tuning
    child process and yield its events: ``status`` events while the first segmentation and
    the prior make the pseudo-labels, then those of fine-tuning."""
    from napari_diffseg.engine.adapt import ADAPT_DEFAULTS, AdaptRequest, run_adapt
    from napari_diffseg.engine.finetune import FinetuneProcess
    from napari_diffseg.engine.training import TrainOptions

    request = AdaptRequest(
        frames=frames, init=str(init), output=str(output), verified=verified,
        options=TrainOptions(**{**ADAPT_DEFAULTS, "iterations": int(iterations),
                                "context_frames": int(context_frames) or None}),
        threads=threads, anchor_frames=int(anchor_frames),
    )
    process = FinetuneProcess(request, run=run_adapt)
    control.process = process
    if control.stop_requested:
        return
    process.start()
    yield {"kind": "status", "message": "adaptation process started"}
    yield from process.events()
