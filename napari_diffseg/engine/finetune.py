"""Fine-tuning in a child process that streams progress, can be paused, stopped and killed.

The GUI runs fine-tuning from a worker thread, but the training loop itself runs in a separate
process (``multiprocessing`` with the *spawn* start method): the Qt thread never shares the GIL
with it, a kill returns all its memory (GPU included) to the OS, and a crash cannot take napari
down. The child does not run the caller's script again, so a script that starts fine-tuning needs
no ``if __name__ == "__main__":`` guard. No Qt or napari import here::

    data, val = build_finetune_data(frames, labels, verified, classes=classes, val_fraction=0.2)
    job = FinetuneProcess(FinetuneRequest(data, val, TrainOptions(iterations=500), "tuned.pt",
                                          init="model.pt"))
    job.start()
    for event in job.events():   # blocks; the worker thread forwards each dict to the GUI
        ...                      # job.pause() / job.resume() / job.stop() / job.kill() meanwhile

Events are plain picklable, JSON-friendly dicts, in this order:

- ``{"kind": "started", "device": "cpu (2 threads)", "iterations": 500, "output": path,
  "refit_iterations": 0}`` (the last stage's size if the run is kept, see ``refit``);
- ``{"kind": "validation_before", "val_dice": float}`` when validating a model fine-tuned from
  ``init``: the Dice of the initial weights, by the same routine as the later validations;
- ``{"kind": "progress", "iteration", "total", "losses": {name: float}, "val_dice": float |
  None, "elapsed_s"}`` after every iteration (``val_dice`` only where validation ran);
- ``{"kind": "checkpoint", "path", "iteration", "val_dice", "best": bool}`` whenever a file is
  written;
- ``{"kind": "refit", "iterations", "total", "frames"}`` when the last stage on every verified
  frame begins (``FinetuneRequest.refit_iterations``): its ``progress`` events carry
  ``"stage": "refit"`` and count on from the validated stage's iterations to ``total``;
- ``{"kind": "paused", "iteration"}`` / ``{"kind": "resumed", "iteration"}``;
- ``{"kind": "log", "level", "message"}`` for warnings logged by the training code;
- exactly one final ``{"kind": "done", "path", "metrics", "stopped", "best_val_dice",
  "best_iteration", "val_dice_before"}`` or ``{"kind": "error", "message", "error_type",
  "detail"}``.

Files: ``request.output`` holds the weights with the best validation Dice when there is a
validation set (after the last stage on every verified frame, those weights trained on), else
the last weights; it is always written atomically (a reader never sees a
half-written file) and holds no training state (optimiser, EMA teacher, prototype memory), so it
stays small and is a model to use or to fine-tune again (``init=``), not a run to resume.
With ``checkpoint_every`` the current weights are also saved every N iterations: to ``output``
itself without validation, to :func:`last_path` (``tuned.last.pt``) with validation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing as mp
import queue
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_diffseg.data.sequences import SparseDataset, context_stack, normalise_gray
from napari_diffseg.engine.checkpoint import (
    Checkpoint,
    CheckpointError,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from napari_diffseg.engine.defaults import (  # noqa: F401 (re-exported: older imports)
    FINETUNE_DEFAULTS,
    FINETUNE_REFIT_LR_SCALE,
    FINETUNE_REFIT_SHARE,
    FINETUNE_VAL_FRACTION,
    worse_than_before,
)
from napari_diffseg.engine.device import device_description, resolve_device
from napari_diffseg.engine.propagate import anchor_targets
from napari_diffseg.engine.training import (
    TrainOptions,
    TrainProgress,
    context_frames_for,
    train,
    validation_dice,
)
from napari_diffseg.model import ModelConfig

logger = logging.getLogger(__name__)

TERMINAL_KINDS = ("done", "error")
OOM_MESSAGE = "GPU out of memory: lower the batch size or crop size, or train on CPU"
RAM_MESSAGE = "out of memory: lower the batch size or crop size, or train on fewer frames"


# -- data ----------------------------------------------------------------------------------


def _gray(frames: np.ndarray, what: str, normalisation: dict | None) -> np.ndarray:
    """(T, H, W) or (T, H, W, 3) raw frames -> (T, H, W) float32 normalised."""
    x = np.asarray(frames)
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)):
        raise ValueError(f"{what} should be frames x height x width (or x 3 for colour), "
                         f"got shape {x.shape}")
    return normalise_gray(x, normalisation)


def held_out_frames(verified: Iterable[int], val_fraction: float, seed: int = 0) -> list[int]:
    """The verified frames :func:`build_finetune_data` holds out for validation: none for
    ``val_fraction`` 0, else ``max(1, round(val_fraction * n))`` of the n verified frames but
    at least one left for training; a deterministic function of `seed` and `verified`."""
    chosen = sorted({int(i) for i in verified})
    if val_fraction <= 0 or not chosen:
        return []
    n_val = min(max(1, round(val_fraction * len(chosen))), len(chosen) - 1)
    if n_val == 0:
        logger.warning("only 1 verified frame: no validation set, it is used for training")
        return []
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(chosen, size=n_val, replace=False))


def build_finetune_data(
    frames: np.ndarray,
    labels: np.ndarray,
    verified: Iterable[int],
    *,
    classes: dict[int, str],
    normalisation: dict | None = None,
    extra_unlabelled: Iterable[np.ndarray] = (),
    val_fraction: float = 0.0,
    seed: int = 0,
    name: str = "video",
    context_frames: int = 0,
    anchor_frames: int = 0,
    should_stop=None,
) -> tuple[SparseDataset, SparseDataset | None]:
    """The training (and validation) set of one annotated video, as the GUI holds it.

    Args:
        frames: (T, H, W) raw video of any dtype, or (T, H, W, 3) (averaged to gray after
            normalisation).
        labels: (T, H, W) integer label volume (values 0..255); only verified frames are read.
        verified: indices of the frames whose labels are ground truth; every other frame of the
            video is used as an unlabelled frame.
        classes: label value -> class name (0, the background, is added if missing).
        normalisation: as stored in checkpoints (default ``DEFAULT_NORMALISATION``); pass the
            initial model's. Each video is normalised with its own percentiles.
        extra_unlabelled: more raw videos, each (T', H', W') or (T', H', W', 3), all unlabelled.
        val_fraction: share of the verified frames held out for validation, in [0, 1): none
            for 0, else ``max(1, round(val_fraction * n))`` but at least 1 frame is kept for
            training (so 1 verified frame gives no validation set). Held-out frames are used
            neither as labelled nor as unlabelled training frames.
        seed: the held-out frames are a deterministic function of ``seed`` and ``verified``.
        name: sequence name recorded in the dataset summary.
        context_frames: c > 0 for a model with temporal context: every image is the (1 + 2 c,
            H, W) stack of the frame and its neighbours in the video
            (:func:`napari_diffseg.data.context_stack`).
        anchor_frames: d > 0 carries the labels of the training's verified frames along the
            video's motion to the unlabelled frames up to d frames away
            (:func:`napari_diffseg.engine.propagate.anchor_targets`): where confident they
            replace the teacher's pseudo-labels (``TrainOptions.anchor_confidence``).
        should_stop: polled while the anchors' optical flow is computed.

    Returns:
        (train, val): ``train`` has the verified frames as (H, W) float32 images with (H, W)
        uint8 labels and all other frames as unlabelled (H, W) float32 images; ``val`` holds
        the held-out verified frames, or is None.

    Raises:
        ValueError: no verified frames, an index outside the video, mismatching shapes, label
            values that are not classes, or a val_fraction outside [0, 1).
    """
    chosen = sorted({int(i) for i in verified})
    if not chosen:
        raise ValueError("no verified frames to train on: mark at least one corrected frame "
                         "as verified")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    raw = np.asarray(frames)
    lab = np.asarray(labels)
    if lab.shape != raw.shape[:3]:
        raise ValueError(f"labels of shape {lab.shape} do not match the video's frames "
                         f"{raw.shape[:3]} (frames x height x width)")
    if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise ValueError(f"labels should be integers, got {lab.dtype}")
    n_frames = raw.shape[0]
    outside = [i for i in chosen if not 0 <= i < n_frames]
    if outside:
        raise ValueError(f"verified frame(s) {outside} are outside the video, which has "
                         f"{n_frames} frames (0 to {n_frames - 1})")
    names = {int(k): str(v) for k, v in classes.items()}
    names.setdefault(0, "background")
    for i in chosen:
        unknown = sorted(set(np.unique(lab[i]).tolist()) - set(names))
        if unknown:
            raise ValueError(f"frame {i} has label value(s) {unknown} that are not classes "
                             f"({', '.join(f'{k} {v}' for k, v in sorted(names.items()))}): "
                             "erase them or add the class")
    held_out = held_out_frames(chosen, val_fraction, seed)
    video = context_stack(_gray(raw, "the video", normalisation), context_frames)
    train_set = SparseDataset(classes=dict(names), sequences=[name], source=name,
                              context_frames=context_frames)
    labelled = set(chosen) - set(held_out)
    anchors = {}
    if anchor_frames > 0:
        anchors = anchor_targets(raw, lab, sorted(labelled), distance=anchor_frames,
                                 should_stop=should_stop)
    for i in range(n_frames):
        if i in labelled:
            train_set.images.append(video[i])
            train_set.labels.append(lab[i].astype(np.uint8))
        elif i not in held_out:
            train_set.unlabelled.append(video[i])
            train_set.unlabelled_anchors.append(anchors.get(i))
    for k, extra in enumerate(extra_unlabelled):
        more = context_stack(_gray(extra, f"extra video {k}", normalisation), context_frames)
        train_set.unlabelled.extend(more)
        train_set.unlabelled_anchors.extend([None] * len(more))
        train_set.sequences.append(f"{name}-extra{k}")
    val_set = None
    if held_out:
        val_set = SparseDataset(images=[video[i] for i in held_out],
                                labels=[lab[i].astype(np.uint8) for i in held_out],
                                classes=dict(names), sequences=[name], source=f"{name} (val)",
                                context_frames=context_frames)
    logger.info("fine-tuning data: %d labelled, %d unlabelled (%d anchored), %d validation "
                "frames", len(train_set.images), len(train_set.unlabelled), len(anchors),
                len(held_out))
    return train_set, val_set


# -- the request and its synchronous run ---------------------------------------------------
@dataclasses.dataclass
class FinetuneRequest:
    """Everything the child process needs (pickled to it, so plain data and arrays only).

    Attributes:
        data: training frames (see :func:`build_finetune_data`).
        val: validation frames, or None (then ``output`` holds the last weights).
        options: the training options; ``options.val_every`` sets how often validation runs.
        output: the checkpoint file the user sees (best val Dice if ``val`` else the last).
        init: checkpoint file to start from; None trains from scratch.
        model_config: architecture (dict or ModelConfig), used only when ``init`` is None.
        threads: ``torch.set_num_threads`` in the child process (None: torch's default).
        checkpoint_every: also save the current weights every N iterations (0: only at
            validation improvements and at the end); see :func:`last_path`.
        notes: JSON-friendly facts about the run added to the metrics of every checkpoint
            written (e.g. the statistics of an adaptation's pseudo-labels).
        refit_iterations: with ``val``, a last stage of this many iterations (at
            ``FINETUNE_REFIT_LR_SCALE`` times the learning rate, no validation) that trains the
            chosen weights on the training frames plus the validation frames, when the run
            was not stopped and its best validation Dice is not below the start model's
            (:func:`~napari_diffseg.engine.defaults.worse_than_before`); 0: none.
    """

    data: SparseDataset
    val: SparseDataset | None
    options: TrainOptions
    output: str
    init: str | None = None
    model_config: dict | None = None
    threads: int | None = None
    checkpoint_every: int = 0
    notes: dict | None = None
    refit_iterations: int = 0


def finetune_request(
    frames: np.ndarray,
    labels: np.ndarray,
    verified: Iterable[int],
    *,
    classes: dict[int, str] | None = None,
    init: str | None,
    output: str | Path,
    options: dict,
    val_fraction: float = FINETUNE_VAL_FRACTION,
    extra_unlabelled: Iterable[np.ndarray] = (),
    threads: int | None = None,
    should_stop=None,
    refit_share: float = FINETUNE_REFIT_SHARE,
) -> FinetuneRequest:
    """What one press of the dock's Fine-tune button runs, for :class:`FinetuneProcess`.

    `options` are :class:`~napari_diffseg.engine.training.TrainOptions` fields plus
    ``anchor_frames`` (see :func:`build_finetune_data`). A run from the model `init`
    continues its noise schedule (``timesteps``), normalises the frames as it was trained
    and gives them the neighbouring frames it sees (a model never loses them:
    :func:`~napari_diffseg.engine.training.context_frames_for`); `init` None trains a new
    model. `classes` None: the start model's. The held-out frames are
    :func:`held_out_frames` ``(verified, val_fraction)``; when there are some, the run ends
    with ``round(refit_share * iterations)`` iterations on every verified frame
    (``FinetuneRequest.refit_iterations``; 0 for none).
    Raises :class:`~napari_diffseg.engine.propagate.PropagationCancelled` when
    `should_stop` turns true while the anchors are computed, and what
    :func:`build_finetune_data` raises."""
    options = dict(options)
    anchor_frames = int(options.pop("anchor_frames", 0) or 0)
    normalisation = model_config = None
    if init is not None:
        start = load_checkpoint(init, map_location="cpu")
        normalisation, model_config = start.normalisation, start.model_config
        options["timesteps"] = int(start.schedule.get("timesteps", 10))
        if classes is None:
            classes = dict(start.classes)
        del start
    if classes is None:
        raise ValueError("a new model needs its classes: pass classes")
    context = context_frames_for(model_config, options.get("context_frames"))
    data, val = build_finetune_data(
        frames, labels, verified, classes=classes, normalisation=normalisation,
        extra_unlabelled=extra_unlabelled, val_fraction=val_fraction, context_frames=context,
        anchor_frames=anchor_frames, should_stop=should_stop)
    options = TrainOptions(**options)
    refit = round(refit_share * options.iterations) if val is not None else 0
    return FinetuneRequest(data=data, val=val, options=options,
                           output=str(output), init=None if init is None else str(init),
                           threads=threads, refit_iterations=max(0, refit))


def last_path(output: str | Path) -> Path:
    """Where periodic saves go when ``output`` holds the best weights: ``x.pt -> x.last.pt``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.last{output.suffix or '.pt'}")


def error_event(exc: BaseException) -> dict[str, Any]:
    """The ``error`` event for an exception, with a message that says what to do."""
    text = str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in text.lower()
    ):
        message = OOM_MESSAGE
    elif isinstance(exc, MemoryError) or "can't allocate memory" in text:
        message = RAM_MESSAGE
    elif isinstance(exc, ValueError):  # CheckpointError included: messages say what to do
        message = text
    elif isinstance(exc, KeyboardInterrupt):
        message = "training was interrupted"
    else:
        message = f"training failed ({type(exc).__name__}: {text})"
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"kind": "error", "message": message, "error_type": type(exc).__name__,
            "detail": detail}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


class _Saver:
    """Decides which checkpoint goes to which file, and emits the ``checkpoint`` events."""

    def __init__(self, request: FinetuneRequest, validating: bool,
                 emit: Callable[[dict], None]) -> None:
        self.output = Path(request.output)
        self.validating = validating
        self.every = max(0, request.checkpoint_every)
        self.emit = emit
        self.notes = dict(request.notes or {})
        self.best: float | None = None
        self.best_iteration: int | None = None
        self.best_ckpt: Checkpoint | None = None
        self.pending: int | None = None  # iteration whose improvement is not yet on disk

    def _write(self, path: Path, ckpt: Checkpoint, iteration: int, best: bool,
               announce: bool = True) -> None:
        try:
            save_checkpoint(path, dataclasses.replace(
                ckpt, training_state=None, metrics={**ckpt.metrics, **self.notes}))
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}: choose another file to save the model to") from exc
        if announce:
            self.emit({"kind": "checkpoint", "path": str(path), "iteration": iteration,
                       "val_dice": self.best if best else None, "best": best})

    def progress(self, p: TrainProgress) -> None:
        """Called by train() after each iteration, before :meth:`periodic` of the same one."""
        if not (self.validating and _finite(p.val_dice)):
            return
        if self.best is None or p.val_dice > self.best:
            self.best, self.best_iteration = float(p.val_dice), p.iteration
            self.pending = p.iteration

    def periodic(self, ckpt: Checkpoint) -> None:
        """train()'s ``on_checkpoint``; ``ckpt.metrics["iterations"]`` is the iteration."""
        it = int(ckpt.metrics["iterations"])
        if self.pending == it:
            self.best_ckpt = dataclasses.replace(
                ckpt, training_state=None, metrics={"iterations": it, "val_dice": self.best})
            self._write(self.output, self.best_ckpt, it, best=True)
            self.pending = None
        if self.every and it % self.every == 0:
            path = last_path(self.output) if self.validating else self.output
            self._write(path, ckpt, it, best=False)

    def finish(self, final: Checkpoint) -> dict:
        """Write the end result; -> metrics of the run (JSON-friendly)."""
        metrics = dict(final.metrics)
        it = int(metrics.get("iterations", 0))
        new_best = self.pending is not None  # the last validation improved: final weights
        if new_best:
            self.best_ckpt = dataclasses.replace(final, metrics={"iterations": it,
                                                                "val_dice": self.best})
        if self.best_ckpt is not None:  # keep the best weights, record the final metrics
            best = dataclasses.replace(self.best_ckpt, metrics={
                **self.best_ckpt.metrics, "best_iteration": self.best_iteration,
                "best_val_dice": self.best, "final": metrics})
            self._write(self.output, best, it, best=True, announce=new_best)
        else:  # no validation, or stopped before the first one: the last weights
            if self.validating:
                logger.warning("no validation Dice was measured (stopped before the first "
                               "validation, or no foreground in the validation frames): "
                               "saving the last weights")
            self._write(self.output, final, it, best=False)
        return {**metrics, **self.notes, "best_val_dice": self.best,
                "best_iteration": self.best_iteration}

    def refitted(self, ckpt: Checkpoint, iterations: int, frames: int, at: int) -> None:
        """Write the weights of the last stage on every verified frame over the validated
        ones, with the validation's record and the stage's size."""
        self._write(self.output, dataclasses.replace(ckpt, metrics={
            **self.best_ckpt.metrics, "best_iteration": self.best_iteration,
            "best_val_dice": self.best, "refit_iterations": iterations,
            "refit_frames": frames}), at, best=False)


def run_finetune(
    request: FinetuneRequest,
    emit: Callable[[dict], None],
    should_stop: Callable[[], bool] = lambda: False,
    is_paused: Callable[[], bool] = lambda: False,
    *,
    poll: float = 0.1,
) -> dict:
    """Fine-tune in this process: what the child process runs, callable directly.

    ``emit`` receives the events (module docstring) from ``started`` to ``done``;
    ``should_stop`` and ``is_paused`` are polled between iterations (a pause blocks there,
    polling every ``poll`` s, until resumed or stopped). A stop ends training at the next
    iteration boundary and still writes the checkpoint. Does not set torch's thread count.

    Returns:
        the ``done`` event (also emitted).

    Raises:
        CheckpointError: the init checkpoint cannot be read, or the output cannot be written.
        ValueError: data and model do not fit (classes, frame size), or a bad option.
        torch.cuda.OutOfMemoryError: and whatever else training raises
            (:func:`error_event` turns them into ``error`` events).
    """
    opts = request.options
    init = None
    if request.init:
        try:
            init = load_checkpoint(request.init)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}: choose another model to start from, or train "
                                  "from scratch") from exc
    if init is not None and init.schedule.get("timesteps") not in (None, opts.timesteps):
        logger.warning("the initial model was trained with %s diffusion timesteps, this run "
                       "uses %d", init.schedule.get("timesteps"), opts.timesteps)
    config = request.model_config
    if isinstance(config, dict):
        config = ModelConfig(**config)
    # the frames must carry the neighbours the trained model will see (a model never loses
    # those of its start model): say so before any work, not as a shape error inside a layer
    if init is not None:
        wanted = context_frames_for(init.model_config, opts.context_frames)
    elif opts.context_frames is not None:  # a new model: what the options ask, as in train
        wanted = opts.context_frames
    else:
        wanted = config.context_frames if config is not None else 0
    for name, part in (("training", request.data), ("validation", request.val)):
        if part is not None and part.context_frames != wanted:
            raise ValueError(
                f"the model sees {wanted} neighbouring frame(s) on each side but the "
                f"{name} frames carry {part.context_frames}: build them with "
                f"context_frames={wanted} (engine.training.context_frames_for)")
    validating = request.val is not None and opts.val_every > 0
    if request.val is not None and not validating:
        logger.warning("a validation set was given but options.val_every is 0: not validating")
    emit({"kind": "started", "device": device_description(resolve_device(opts.device)),
          "iterations": opts.iterations, "output": str(request.output),
          "refit_iterations": int(request.refit_iterations) if validating else 0})
    before = None
    if validating and init is not None:
        model = build_model(init, resolve_device(opts.device))
        before = validation_dice(model, request.val, opts.timesteps, opts.val_steps,
                                 opts.val_samples, opts.seed)
        del model
        emit({"kind": "validation_before", "val_dice": before})
    saver = _Saver(request, validating, emit)
    last = {"iteration": 0, "elapsed_s": 0.0}

    def callback(p: TrainProgress) -> None:
        last["iteration"], last["elapsed_s"] = p.iteration, p.elapsed_s
        saver.progress(p)
        emit({"kind": "progress", "iteration": p.iteration, "total": p.total,
              "losses": dict(p.losses), "val_dice": p.val_dice, "elapsed_s": p.elapsed_s})

    def gate() -> bool:
        if not should_stop() and is_paused():
            emit({"kind": "paused", "iteration": last["iteration"]})
            while is_paused() and not should_stop():
                time.sleep(poll)
            if not should_stop():
                emit({"kind": "resumed", "iteration": last["iteration"]})
        return should_stop()

    every = [n for n in (opts.val_every if validating else 0, saver.every) if n > 0]
    result = train(request.data, opts, model_config=config if init is None else None,
                   init=init, val=request.val if validating else None, callback=callback,
                   should_stop=gate, checkpoint_every=math.gcd(*every) if every else 0,
                   on_checkpoint=saver.periodic)
    metrics = saver.finish(result.checkpoint)
    stopped = bool(result.stopped_early)
    if (request.refit_iterations > 0 and validating and not stopped
            and saver.best_ckpt is not None and not worse_than_before(saver.best, before)):
        refit, stopped = _refit(request, saver, emit, gate, last["iteration"],
                                last["elapsed_s"])
        metrics["refit_iterations"] = refit
    done = {"kind": "done", "path": str(request.output), "metrics": metrics,
            "stopped": stopped, "best_val_dice": saver.best,
            "best_iteration": saver.best_iteration, "val_dice_before": before}
    emit(done)
    return done


def refit_stage(request: FinetuneRequest) -> tuple[SparseDataset, TrainOptions]:
    """The last stage's training set (the training frames plus the validation frames; the
    unlabelled frames and their anchors as they are) and options (``refit_iterations``
    iterations at ``FINETUNE_REFIT_LR_SCALE`` times the rate, no validation)."""
    if request.val is None:
        raise ValueError("the last stage adds the validation frames: the request has none")
    data = dataclasses.replace(request.data,
                               images=[*request.data.images, *request.val.images],
                               labels=[*request.data.labels, *request.val.labels])
    opts = request.options
    return data, dataclasses.replace(opts, iterations=int(request.refit_iterations),
                                     lr=opts.lr * FINETUNE_REFIT_LR_SCALE, val_every=0)


def _refit(request: FinetuneRequest, saver: _Saver, emit: Callable[[dict], None],
           should_stop: Callable[[], bool], offset: int, elapsed: float) -> tuple[int, bool]:
    """The last stage (``FinetuneRequest.refit_iterations``): the chosen weights trained on the
    training and the validation frames, written to the output over them.
    -> (iterations it ran, stopped); a stopped stage writes nothing: the validated weights
    stay."""
    data, stage = refit_stage(request)
    n = stage.iterations
    total = offset + n
    emit({"kind": "refit", "iterations": n, "total": total,
          "frames": len(request.val.images)})

    def callback(p: TrainProgress) -> None:
        emit({"kind": "progress", "stage": "refit", "iteration": offset + p.iteration,
              "total": total, "losses": dict(p.losses), "val_dice": None,
              "elapsed_s": elapsed + p.elapsed_s})

    result = train(data, stage, init=saver.best_ckpt, callback=callback,
                   should_stop=should_stop)
    if result.stopped_early:
        logger.warning("the last stage on every verified frame was stopped: the model is "
                       "the validated checkpoint")
        return 0, True
    saver.refitted(result.checkpoint, n, len(request.val.images), total)
    return n, False


# -- the child process ---------------------------------------------------------------------
class _EventLogHandler(logging.Handler):
    """Forwards log records of the training code to the parent as ``log`` events."""

    def __init__(self, emit: Callable[[dict], None], level: int) -> None:
        super().__init__(level)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit({"kind": "log", "level": record.levelname,
                        "message": record.getMessage()})
        except Exception:  # a log line must never break training
            self.handleError(record)


def _child_main(request: FinetuneRequest, events: Any, pause: Any, stop: Any,
                log_level: int, run: Callable = run_finetune) -> None:
    """Entry point of the child process: run, and report every outcome as an event."""
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s")
    package_logger = logging.getLogger("napari_diffseg")
    package_logger.addHandler(_EventLogHandler(events.put, logging.WARNING))
    parent = mp.parent_process()

    def should_stop() -> bool:
        if parent is not None and not parent.is_alive():  # napari is gone: don't linger
            stop.set()
        return stop.is_set()

    try:
        if request.threads:
            torch.set_num_threads(int(request.threads))
        run(request, events.put, should_stop, pause.is_set)
    except (Exception, KeyboardInterrupt) as exc:
        logger.info("fine-tuning failed: %s", exc)  # not forwarded: the event has it all
        events.put(error_event(exc))


_MAIN_LOCK = threading.Lock()


@contextmanager
def _caller_script_hidden() -> Iterator[None]:
    """Start a child without re-running the caller's script in it.

    To rebuild ``__main__``, *spawn* (and *forkserver*) have the child import the parent's
    main module again, by ``__spec__.name`` or by running ``__main__.__file__``
    (``multiprocessing.spawn.get_preparation_data``): a script without an
    ``if __name__ == "__main__":`` guard ran a second time, opened a second napari window and
    failed trying to start a process from the child. The child needs nothing from the
    caller's script (the target and the request live in this package), so both attributes
    are hidden while :meth:`FinetuneProcess.start` hands the preparation data over, and put
    back at once.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _MAIN_LOCK:
        saved = {name: main.__dict__[name] for name in ("__file__", "__spec__")
                 if name in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class FinetuneProcess:
    """One fine-tuning run in a child process (see the module docstring for the events).

    Not thread-safe for concurrent :meth:`events` iteration; ``pause``/``resume``/``stop``/
    ``kill`` may be called from any thread while another iterates :meth:`events`.
    """

    def __init__(self, request: FinetuneRequest, *, start_method: str = "spawn",
                 run: Callable = run_finetune) -> None:
        """``run``: what the child process calls, ``run(request, emit, should_stop,
        is_paused)``, a module-level function (pickled by name), e.g.
        :func:`napari_diffseg.engine.adapt.run_adapt` with an ``AdaptRequest``."""
        self.request = request
        self._run = run
        self._ctx = mp.get_context(start_method)
        self._queue = self._ctx.Queue()
        self._pause = self._ctx.Event()
        self._stop = self._ctx.Event()
        self._process: Any = None
        self._pending: deque[dict] = deque()
        self._final: dict | None = None  # the done/error event, once received
        self._over = False  # events() has yielded its last event

    def start(self) -> None:
        """Start the child process (returns at once; training starts after its imports)."""
        if self._process is not None:
            raise RuntimeError("this fine-tuning process was already started")
        level = logging.getLogger("napari_diffseg").getEffectiveLevel()
        # daemon: ended by multiprocessing when the parent exits; the child also stops by
        # itself when it sees the parent gone (killed), see _child_main
        self._process = self._ctx.Process(
            target=_child_main, name="napari-diffseg-finetune", daemon=True,
            args=(self.request, self._queue, self._pause, self._stop, level, self._run))
        with _caller_script_hidden():
            self._process.start()
        logger.info("fine-tuning process %d started", self._process.pid)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    @property
    def exitcode(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    def pause(self) -> None:
        """Hold training at the next iteration boundary (a ``paused`` event follows)."""
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    def stop(self) -> None:
        """End at the next iteration boundary (paused or not); the checkpoint is written and
        ``done`` is sent with ``stopped=True``."""
        self._stop.set()

    def _receive(self, timeout: float) -> bool:
        """Move one event from the queue to the pending list; False if none came."""
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False
        if event.get("kind") in TERMINAL_KINDS and self._final is None:
            self._final = event
            if event["kind"] == "error":
                logger.debug("fine-tuning failed:\n%s", event.get("detail", ""))
        elif event.get("kind") == "log":
            logger.log(logging.getLevelName(event.get("level", "WARNING")),
                       "training process: %s", event.get("message"))
        self._pending.append(event)
        return True

    def _drain(self) -> None:
        while self._receive(0.05):
            pass

    def _join(self, timeout: float = 10.0) -> None:
        self._process.join(timeout)
        if self._process.is_alive():
            logger.warning("fine-tuning process did not exit after its last event: terminating")
            self._process.terminate()
            self._process.join(timeout)

    def events(self, poll: float = 0.1) -> Iterator[dict]:
        """Yield the events as they come, blocking, until ``done`` or ``error``; then join.

        If the process ends without either (killed, crashed), the last event is an ``error``
        saying it exited with code N. ``poll``: seconds between liveness checks.
        """
        if self._process is None:
            raise RuntimeError("call start() before events()")
        while not self._over:
            if self._pending:
                event = self._pending.popleft()
                if event is self._final:
                    self._over = True
                    self._join()
                yield event
            elif self._receive(poll):
                continue
            elif not self._process.is_alive():
                self._drain()  # what it sent before exiting
                if self._pending:
                    continue
                self._process.join()
                code = self._process.exitcode
                self._over = True
                yield {"kind": "error", "error_type": "ProcessExited", "detail": "",
                       "message": f"the training process exited with code {code} before "
                                  "finishing (killed, or out of memory?)"}

    def kill(self, timeout: float = 5.0) -> None:
        """Stop; if the process is still alive after ``timeout`` s, terminate it (SIGTERM,
        then SIGKILL). Events it sent meanwhile stay available to :meth:`events`."""
        if self._process is None:
            return
        self.stop()
        deadline = time.monotonic() + timeout
        while self._process.is_alive() and time.monotonic() < deadline:
            self._receive(0.05)  # keep the pipe empty so the child can flush and exit
        if self._process.is_alive():
            logger.warning("fine-tuning process %d did not stop in %.1f s: terminating",
                           self._process.pid, timeout)
            self._process.terminate()
            self._process.join(2.0)
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._drain()

    def __enter__(self) -> FinetuneProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
