"""Adapt a model to one video, from zero, one or more verified frames.

A model trained on other data (the bundled one has only seen the synthetic generator) labels
little on a new clinical cine, and the user has corrected nothing yet. Adapting runs, in one
go (in the dock's fine-tuning child process, or in the CLI's own process):

1. the starting model segments every frame (a few DDIM samples: mean probabilities);
2. the vesselness prior (:mod:`napari_diffseg.engine.prior`) finds the dark ridges;
3. :func:`fuse_pseudo_labels` turns both into noisy pseudo-labels with a weight per pixel:
   confident foreground of the model is kept (devices, vessel); a strong ridge of the prior
   where the model is unsure or says background becomes vessel; where the prior sees no ridge
   at all and the model sees no confident foreground it is background; every other pixel
   (a weak ridge the model does not confirm, the fringe of a ridge) is unknown
   (:data:`IGNORE_LABEL`, weight 0) instead of being forced to background; then, as
   ``segment`` does over the whole video, vessel over what the frames without contrast show
   as dark becomes unknown (:func:`drop_static_pseudo_vessel`) and the guidewire is judged
   (:func:`track_pseudo_wire`);
4. semi-supervised fine-tuning (:func:`~napari_diffseg.engine.training.train`) on the video
   itself: verified frames as labels, the fused pseudo-labels of the other frames as (noisy)
   labels, and the other frames also as unlabelled frames for the EMA teacher and the
   prototype loss, which is what makes the method robust to wrong pseudo-labels.

Events are those of :mod:`napari_diffseg.engine.finetune`, preceded by ``status`` events
(``{"kind": "status", "message", "stage", "done", "total"}``) while the pseudo-labels are
made. A stop before training ends with ``done`` whose ``path`` is None (no file written).
No Qt or napari import here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

import numpy as np

from napari_diffseg.data.sequences import (
    IGNORE_LABEL,
    SparseDataset,
    apply_normalisation,
    context_stack,
    normalisation_range,
)
from napari_diffseg.engine.checkpoint import build_model, load_checkpoint
from napari_diffseg.engine.defaults import FINETUNE_ANCHOR_FRAMES
from napari_diffseg.engine.device import resolve_device
from napari_diffseg.engine.finetune import FinetuneRequest, run_finetune
from napari_diffseg.engine.inference import (
    DEFAULT_MIN_COMPONENT,
    Cancelled,
    SegmentOptions,
    predict_normalised,
)
from napari_diffseg.engine.postprocess import (
    drop_static_vessel_runs,
    hidden_wire_classes,
    remove_specks,
    track_wire_runs,
    vessel_class,
    wire_changes,
)
from napari_diffseg.engine.prior import PriorOptions, vessel_prior
from napari_diffseg.engine.propagate import PropagationCancelled, anchor_targets
from napari_diffseg.engine.training import TrainOptions, context_frames_for

logger = logging.getLogger(__name__)

#: What "Adapt to this video" runs unless told otherwise (TrainOptions fields): sized to take
#: a few minutes on a 2-core CPU for a 512 px x 40-frame video (docs/user-guide.md).
ADAPT_DEFAULTS = {
    "iterations": 200,
    "batch_size": 4,
    "crop_size": 128,
    "lr": 2e-4,
    "val_every": 0,
    "pseudo_steps": 2,
    "pseudo_samples": 2,
}


@dataclasses.dataclass
class FusionOptions:
    """How model and prior are fused (probabilities in [0, 1], vesselness in [0, 1]).

    confident: the model's mean probability of its top class from which its answer is kept.
    quiet: background only where the vesselness is below this (no ridge nearby).
    vessel: the label value of vessels; devices are the model's other foreground classes.
    """

    confident: float = 0.7
    quiet: float = 0.05
    vessel: int = 1


def fuse_pseudo_labels(
    probabilities: np.ndarray,
    vesselness: np.ndarray,
    prior_mask: np.ndarray,
    options: FusionOptions | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Initial pseudo-labels of frames from the model's probabilities and the prior.

    Args:
        probabilities: (T, C, H, W) mean class probabilities of the model (class 0 background).
        vesselness: (T, H, W) prior vesselness in [0, 1].
        prior_mask: (T, H, W) bool, the prior's vessel mask.

    Returns:
        labels (T, H, W) uint8, :data:`IGNORE_LABEL` where unknown; weights (T, H, W) float32
        in [0, 1], the confidence of each label (0 where unknown): the model's probability
        where its foreground is kept, the vesselness relative to the mask's weakest pixel
        (at least 0.5) where the prior labels vessel, the background probability (at least
        0.5) where the prior sees nothing.
    """
    o = options or FusionOptions()
    p = np.asarray(probabilities, dtype=np.float32)
    v = np.asarray(vesselness, dtype=np.float32)
    ridge = np.asarray(prior_mask, dtype=bool)
    if p.ndim != 4 or p.shape[0:1] + p.shape[2:] != v.shape or v.shape != ridge.shape:
        raise ValueError(f"probabilities {p.shape} must be (T, C, H, W) and vesselness "
                         f"{v.shape} and mask {ridge.shape} (T, H, W) of the same frames")
    top = p.argmax(axis=1)
    conf = p.max(axis=1)
    labels = np.full(top.shape, IGNORE_LABEL, dtype=np.uint8)
    weights = np.zeros(top.shape, dtype=np.float32)
    sure = conf >= o.confident
    foreground = sure & (top != 0)
    labels[foreground] = top[foreground]
    weights[foreground] = conf[foreground]
    from_prior = ridge & ~foreground
    labels[from_prior] = o.vessel
    if from_prior.any():
        weakest = max(float(v[ridge].min()), 1e-6)
        weights[from_prior] = np.clip(0.5 * v[from_prior] / weakest, 0.5, 1.0)
    # background: no ridge at all nearby, and the model does not confidently see a device or
    # vessel there (then it is the prior that is sure, even if the model is not)
    background = ~foreground & ~ridge & (v < o.quiet)
    labels[background] = 0
    weights[background] = np.maximum(p[:, 0][background], 0.5)
    return labels, weights


def _whole_video(labels: np.ndarray, todo: list[int], verified: Mapping[int, np.ndarray],
                 n: int) -> tuple[np.ndarray, dict[int, int]]:
    """The video's n label maps for a whole-video step: `labels` (len(todo), H, W) at the
    frames `todo`, the user's `verified` ones at theirs (uint8; frames in neither are
    empty), and the position in `labels` of each frame of `todo`."""
    video = np.zeros((n,) + labels.shape[1:], np.uint8)
    video[todo] = labels
    for i, lab in verified.items():
        video[i] = lab
    return video, {int(i): k for k, i in enumerate(todo)}


def drop_static_pseudo_vessel(labels: np.ndarray, raw: np.ndarray, todo: list[int],
                              verified: Mapping[int, np.ndarray], vessel: int) -> list[int]:
    """The static-vessel step of ``segment``
    (:func:`~napari_diffseg.engine.postprocess.drop_static_vessel`) applied to the
    pseudo-labels, in place: vessel over what the video's frames without contrast show as
    dark (lung markings, clips, wires, a catheter: the vesselness prior answers to all of
    them) becomes unknown (:data:`IGNORE_LABEL`), so that it is not taught as vessel. Not
    background: taught as background, the pieces of true lumen the step misjudges (where
    the tree crosses a static structure) cost proj1's adapted model half its tree
    (docs/real-data.md). labels (len(todo), H, W) of the frames `todo` (pixels of no class,
    the ignore label, count as not vessel), raw: the video's frames, verified: the user's
    frames (evidence, unchanged). Returns the frames changed."""
    video, row = _whole_video(labels, todo, verified, raw.shape[0])
    # the prior's ridges make the pseudo-labels' vessel area a poorer sign of the contrast
    # than a segmentation's: only frames with clearly less vessel stand for the video
    # without contrast (on a generated 8-frame video the two smallest were wash-out frames)
    changed = drop_static_vessel_runs(raw, video, todo, vessel, trusted=list(verified),
                                      fallback=False)
    for i, new in changed.items():
        k = row[i]
        labels[k][(labels[k] == vessel) & (new != vessel)] = IGNORE_LABEL
    return sorted(changed)


def track_pseudo_wire(labels: np.ndarray, probabilities: np.ndarray, todo: list[int],
                      verified: Mapping[int, np.ndarray], n: int,
                      wire: tuple[int, int]) -> dict[str, list[int]]:
    """The wire tracking of ``segment`` (:func:`~napari_diffseg.engine.postprocess.track_wire`)
    applied to the pseudo-labels, in place: a guidewire the starting model draws only inside
    the vessel (a false one) is not taught to the adapted model, and the wire hidden under the
    bolus is. The model's labels of the frames `todo` (argmax of `probabilities`, specks
    removed as ``segment`` does) and the verified frames (the user's: evidence, unchanged)
    make the video; a dropped wire pixel of `labels` takes the tracked label, a kept hidden
    one becomes wire. labels (len(todo), H, W), probabilities (len(todo), C, H, W), n: the
    video's frames, wire: (guidewire id, vessel id). Returns {"kept_hidden": frames,
    "dropped": frames}."""
    guidewire = wire[0]
    model = remove_specks(probabilities.argmax(axis=1).astype(np.uint8), DEFAULT_MIN_COMPONENT)
    video, row = _whole_video(model, todo, verified, n)
    changed = track_wire_runs(video, todo, *wire, trusted=list(verified))
    for i, new in changed.items():
        k = row[i]
        lost = (labels[k] == guidewire) & (new != guidewire)
        labels[k][lost] = new[lost]
        labels[k][(new == guidewire) & (video[i] != guidewire)] = guidewire
    kept, dropped = wire_changes(video, changed, guidewire)
    return {"kept_hidden": kept, "dropped": dropped}


@dataclasses.dataclass
class AdaptRequest:
    """Everything an adaptation needs (pickled to the child process: plain data only).

    frames: (T, H, W) or (T, H, W, 3) raw video; init: the checkpoint to start from;
    output: the checkpoint to write; verified: {frame index: (H, W) true labels};
    options: training options (:data:`ADAPT_DEFAULTS` by default; ``timesteps`` follows the
    initial model); segment_steps / segment_samples: DDIM sampling of the first segmentation;
    threads: ``torch.set_num_threads`` in a child process; checkpoint_every: as in
    :class:`~napari_diffseg.engine.finetune.FinetuneRequest`.
    """

    frames: np.ndarray
    init: str
    output: str
    verified: Mapping[int, np.ndarray] = dataclasses.field(default_factory=dict)
    options: TrainOptions = dataclasses.field(
        default_factory=lambda: TrainOptions(**ADAPT_DEFAULTS))
    fusion: FusionOptions = dataclasses.field(default_factory=FusionOptions)
    prior: PriorOptions = dataclasses.field(default_factory=PriorOptions)
    segment_steps: int = 2
    segment_samples: int = 2
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int = 0
    name: str = "video"
    #: verified labels carried along the motion to the frames up to this far (0: none); the
    #: dock's and the CLI's default too
    anchor_frames: int = FINETUNE_ANCHOR_FRAMES


def _check_verified(verified: Mapping[int, np.ndarray], n: int, shape: tuple,
                    classes: dict[int, str]) -> dict[int, np.ndarray]:
    out = {}
    for i, lab in verified.items():
        i = int(i)
        if not 0 <= i < n:
            raise ValueError(f"verified frame {i} is outside the video, which has {n} frames "
                             f"(0 to {n - 1})")
        lab = np.asarray(lab)
        if lab.shape != shape:
            raise ValueError(f"the labels of verified frame {i} have shape {lab.shape}, the "
                             f"frames {shape}")
        unknown = sorted(set(np.unique(lab).tolist()) - set(classes))
        if unknown:
            raise ValueError(f"verified frame {i} has label value(s) {unknown} that the model "
                             f"does not predict ({classes})")
        out[i] = lab.astype(np.uint8)
    return out


def build_adapt_data(
    request: AdaptRequest,
    emit: Callable[[dict], None] = lambda event: None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[SparseDataset, dict]:
    """Steps 1-3 of the module docstring: -> (training set, statistics of the pseudo-labels).

    The training set has every verified frame with its labels (repeated so that verified
    frames are about half of the labelled draws when there are any), every other frame with
    its fused pseudo-labels, and every other frame again as an unlabelled frame.

    Raises:
        Cancelled: ``should_stop`` became true (polled between frames and DDIM steps).
        CheckpointError, ValueError: the initial model cannot be read, or the data do not fit.
    """
    init = load_checkpoint(request.init, map_location="cpu")
    classes = {int(k): str(v) for k, v in init.classes.items()}
    raw = np.asarray(request.frames)
    if not (raw.ndim == 3 or (raw.ndim == 4 and raw.shape[-1] == 3)):
        raise ValueError(f"the video should be frames x height x width (or x 3 for colour), "
                         f"got shape {raw.shape}")
    n = raw.shape[0]
    verified = _check_verified(request.verified, n, raw.shape[1:3], classes)
    lo, hi = normalisation_range(raw, init.normalisation)
    images = apply_normalisation(raw, lo, hi)
    if images.ndim == 4:
        images = images.mean(axis=-1)
    todo = [i for i in range(n) if i not in verified]
    start_context = context_frames_for(init.model_config, None)
    context = context_frames_for(init.model_config, request.options.context_frames)
    stacks = context_stack(images, context)
    data = SparseDataset(classes=classes, sequences=[request.name],
                         source=f"{request.name} (adapt)", context_frames=context)
    stats = {"frames": n, "verified": len(verified), "pseudo_labelled": len(todo)}
    if todo:
        model = build_model(init).to(resolve_device(request.options.device))
        emit({"kind": "status", "stage": "segment", "done": 0, "total": len(todo),
              "message": f"segmenting {len(todo)} frames with the starting model…"})

        def progress(done: int, total: int) -> None:
            emit({"kind": "status", "stage": "segment", "done": done, "total": total,
                  "message": f"segmenting with the starting model: {done}/{total} frames"})

        probs, _, _ = predict_normalised(
            model, np.ascontiguousarray(context_stack(images, start_context, todo)),
            timesteps=int(init.schedule.get("timesteps", 10)),
            options=SegmentOptions(steps=request.segment_steps, samples=request.segment_samples,
                                   seed=request.seed),
            progress=progress, should_stop=should_stop)
        del model
        emit({"kind": "status", "stage": "prior", "done": 0, "total": len(todo),
              "message": "finding dark ridges (vesselness prior)…"})
        prior = vessel_prior(images[todo], request.prior, normalised=True)
        if should_stop is not None and should_stop():
            raise Cancelled("adaptation stopped while making the pseudo-labels")
        labels, _ = fuse_pseudo_labels(probs, prior.vesselness, prior.mask, request.fusion)
        vessel = vessel_class(classes)
        if vessel is not None:
            stats["static_vessel"] = drop_static_pseudo_vessel(labels, raw, todo, verified,
                                                                vessel)
        wire = hidden_wire_classes(classes)
        if wire is not None:
            stats["wire_tracking"] = track_pseudo_wire(labels, probs, todo, verified, n, wire)
        anchors = {}
        if request.anchor_frames > 0 and verified:
            emit({"kind": "status", "stage": "anchors",
                  "message": "carrying the verified frames' labels to their neighbours…"})
            anchors = anchor_targets(raw, verified, sorted(verified),
                                     distance=request.anchor_frames, should_stop=should_stop)
            for k, i in enumerate(todo):
                if i in anchors:
                    anchor, confidence = anchors[i]
                    sure = confidence >= request.options.anchor_confidence
                    labels[k] = np.where(sure, anchor, labels[k])
        stats["anchored_frames"] = len(anchors)
        known = labels != IGNORE_LABEL
        stats.update({
            "known_fraction": float(known.mean()),
            "vessel_fraction": float((labels == request.fusion.vessel).mean()),
            "from_prior_fraction": float((prior.mask & (labels == request.fusion.vessel)).mean()),
            "model_foreground_fraction": float((probs.argmax(axis=1) > 0).mean()),
        })
        for k, i in enumerate(todo):
            data.images.append(stacks[i])
            data.labels.append(labels[k])
            data.unlabelled.append(stacks[i])
            data.unlabelled_anchors.append(anchors.get(i))
    repeat = max(1, round(len(todo) / len(verified))) if verified else 0
    for i, lab in sorted(verified.items()):
        data.images.extend([stacks[i]] * repeat)
        data.labels.extend([lab] * repeat)
    logger.info("adaptation data: %d verified and %d pseudo-labelled frames; %s",
                len(verified), len(todo), stats)
    return data, stats


def run_adapt(
    request: AdaptRequest,
    emit: Callable[[dict], None],
    should_stop: Callable[[], bool] = lambda: False,
    is_paused: Callable[[], bool] = lambda: False,
) -> dict:
    """Adapt in this process (what the child process runs; :func:`adapt_to_video` wraps it).

    Emits the ``status`` events of the pseudo-labels, then the fine-tuning's events; returns
    the ``done`` event. Its ``metrics``, and those of the checkpoint written, hold the
    statistics of the pseudo-labels under ``"pseudo_labels"`` (frames, verified,
    known_fraction, vessel_fraction, …).
    """
    try:
        data, stats = build_adapt_data(request, emit, should_stop)
    except (Cancelled, PropagationCancelled):
        done = {"kind": "done", "path": None, "metrics": {}, "stopped": True,
                "best_val_dice": None, "best_iteration": None}
        emit(done)
        return done
    init = load_checkpoint(request.init, map_location="cpu")
    options = dataclasses.replace(request.options,
                                  timesteps=int(init.schedule.get("timesteps", 10)))
    del init
    finetune = FinetuneRequest(data=data, val=None, options=options, output=request.output,
                               init=request.init, threads=request.threads,
                               checkpoint_every=request.checkpoint_every,
                               notes={"pseudo_labels": stats})
    emit({"kind": "status", "stage": "train", "done": 0, "total": options.iterations,
          "message": "training on the video…", "pseudo_labels": stats})

    return run_finetune(finetune, emit, should_stop, is_paused)


def adapt_to_video(
    frames: np.ndarray,
    init: str,
    output: str,
    verified: Mapping[int, np.ndarray] | None = None,
    *,
    options: TrainOptions | None = None,
    callback: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **request_fields,
) -> dict:
    """Adapt the model ``init`` (a checkpoint file) to the video ``frames`` and write the
    adapted model to ``output``; synchronous, in this process.

    Args:
        frames: (T, H, W) or (T, H, W, 3) raw video of any dtype.
        verified: {frame index: (H, W) true labels}; may be empty.
        options: training options (default :data:`ADAPT_DEFAULTS`).
        callback: receives every event (module docstring).
        should_stop: polled between frames, DDIM steps and iterations.
        request_fields: other :class:`AdaptRequest` fields (fusion, prior, segment_samples…).

    Returns:
        the ``done`` event: ``path`` (None if stopped before training), ``metrics``.
    """
    request = AdaptRequest(frames=frames, init=str(init), output=str(output),
                           verified=dict(verified or {}),
                           options=options or TrainOptions(**ADAPT_DEFAULTS), **request_fields)
    return run_adapt(request, callback or (lambda event: None),
                     should_stop or (lambda: False))
