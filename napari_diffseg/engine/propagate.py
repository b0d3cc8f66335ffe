"""Propagate a corrected frame's labels to its neighbours along the video's motion.

From a source frame (one the user verified), the labels are carried to the next / previous N
frames one step at a time: the optical flow between two consecutive raw frames
(scikit-image's TV-L1 or iterative Lucas-Kanade, computed on frames downscaled to at most
``max_size`` px for speed) moves the labels of frame t to frame t ± 1 (nearest-neighbour warp,
so label ids stay ids). On a frame the model has segmented, the warped labels are then fused
with the model's own answer, weighted by its uncertainty: where the model is confident
(``1 - entropy / ln C`` at least ``confidence``) its label is kept, where it is unsure the
warped label is taken. The fused frame is what the next step warps further, so the model keeps
the chain from drifting.

The propagated frame's uncertainty falls where the warped labels agree with the model
(multiplied by ``agreement_factor``) and stays where they disagree. Frames in ``keep`` (the
user's verified or painted frames) are never written: the chain passes through them and goes
on from their own labels, which are better than anything warped.

Numpy and scikit-image only: no torch, Qt or napari. ::

    for item in iter_propagate(frames, labels, source=12, options=PropagateOptions(frames=5),
                               model_labels=labels, uncertainty=entropy, num_classes=4,
                               keep=verified):
        labels[item.index] = item.labels
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

logger = logging.getLogger(__name__)

DIRECTIONS = ("both", "forward", "backward")
METHODS = ("tvl1", "ilk")


class PropagationCancelled(Exception):
    """The caller's ``should_stop`` asked to stop; the frames done so far were yielded."""


@dataclasses.dataclass
class PropagateOptions:
    """How far and how to propagate (defaults in one place: the dock, CLI and API share them).

    frames: how many frames to propagate to on each side chosen by ``direction``;
    direction: "both", "forward" (t + 1 …) or "backward" (t − 1 …);
    method: "tvl1" (``optical_flow_tvl1``, more robust to the changing contrast of a bolus) or
    "ilk" (``optical_flow_ilk``, about twice as fast);
    max_size: the flow is computed on frames downscaled so their longer side is at most this
    (0: full resolution), then scaled back;
    confidence: far from the source, the model's label is kept where its confidence
    ``1 - entropy / ln C`` is at least this, the warped label is taken elsewhere;
    decay: near the source the warped labels are trusted more: at d frames from it the model
    needs a confidence of ``confidence + (1 - confidence) * decay ** d`` to override them
    (0: the same threshold at every distance);
    agreement_factor: the uncertainty is multiplied by this where the warped labels agree with
    the model's.
    """

    frames: int = 5
    direction: str = "both"
    method: str = "tvl1"
    max_size: int = 256
    confidence: float = 0.5
    decay: float = 0.7
    agreement_factor: float = 0.25

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, got {self.frames}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")
        if not 0.0 <= self.agreement_factor <= 1.0:
            raise ValueError(f"agreement_factor must be in [0, 1], got {self.agreement_factor}")


@dataclasses.dataclass
class PropagatedFrame:
    """One frame's proposal, as :func:`iter_propagate` yields it.

    index: the frame; previous: the frame its labels were warped from; source: the frame the
    chain started at; labels: (H, W) uint8; uncertainty: (H, W) float32, or None where the
    frame had no model uncertainty; agreement: share of pixels where the warped labels equal
    the model's (None without a model answer); done / total: frames finished / to do.
    """

    index: int
    previous: int
    source: int
    labels: np.ndarray
    uncertainty: np.ndarray | None
    agreement: float | None
    done: int
    total: int
    elapsed_s: float


# -- the pieces --------------------------------------------------------------------------------
def _flow_image(frame: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) or (H, W, 3) raw frame -> (H, W) float32 in [0, 1] (the video's own range)."""
    x = np.asarray(frame, dtype=np.float32)
    if x.ndim == 3:
        x = x.mean(axis=-1)
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def video_range(frames: np.ndarray, sample: int = 16) -> tuple[float, float]:
    """Robust intensity range (1st, 99th percentile) of a video from up to `sample` frames."""
    frames = np.asarray(frames)
    step = max(1, frames.shape[0] // sample)
    values = np.asarray(frames[::step], dtype=np.float32)
    lo, hi = np.percentile(values, (1, 99))
    return float(lo), float(hi)


def frame_flow(target: np.ndarray, previous: np.ndarray, *, method: str = "tvl1",
               max_size: int = 256) -> np.ndarray:
    """Optical flow that carries `previous` onto `target`.

    target, previous: (H, W) float images on the same scale. Returns (2, H, W) float32 (row,
    column) displacements v such that ``target[r] ≈ previous[r + v]``: pass it to
    :func:`warp_labels` to move `previous`'s labels onto `target`.
    """
    from skimage.registration import optical_flow_ilk, optical_flow_tvl1
    from skimage.transform import resize

    h, w = target.shape
    scale = 1.0
    if max_size and max(h, w) > max_size:
        scale = max_size / max(h, w)
        size = (max(8, round(h * scale)), max(8, round(w * scale)))
        target = resize(target, size, anti_aliasing=True, preserve_range=True)
        previous = resize(previous, size, anti_aliasing=True, preserve_range=True)
    if method == "tvl1":
        flow = optical_flow_tvl1(target, previous)
    elif method == "ilk":
        flow = optical_flow_ilk(target, previous, radius=7)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    flow = np.asarray(flow, dtype=np.float32)
    if scale != 1.0:
        flow = np.stack([resize(flow[0], (h, w), order=1) * (h / flow.shape[1]),
                         resize(flow[1], (h, w), order=1) * (w / flow.shape[2])])
    return flow.astype(np.float32)


def warp_labels(labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """(H, W) integer labels moved by a (2, H, W) flow (nearest neighbour, edges clamped):
    ``out[r] = labels[r + flow[:, r]]``."""
    h, w = labels.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                             indexing="ij")
    r = np.clip(np.rint(rows + flow[0]), 0, h - 1).astype(np.intp)
    c = np.clip(np.rint(cols + flow[1]), 0, w - 1).astype(np.intp)
    return labels[r, c]


def model_confidence(entropy: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) entropy in nats -> confidence ``1 - entropy / ln C`` in [0, 1]."""
    top = math.log(max(int(num_classes), 2))
    return np.clip(1.0 - np.asarray(entropy, dtype=np.float32) / top, 0.0, 1.0)


def fuse(warped: np.ndarray, model_labels: np.ndarray, entropy: np.ndarray, num_classes: int,
         confidence: float = 0.5) -> np.ndarray:
    """The model's label where its confidence is at least `confidence`, else the warped one.
    warped, model_labels: (H, W) ids; entropy: (H, W) nats."""
    confident = model_confidence(entropy, num_classes) >= confidence
    return np.where(confident, model_labels, warped).astype(np.uint8)


def threshold(options: PropagateOptions, distance: int) -> float:
    """The model confidence needed to override the warped labels `distance` frames from the
    source: ``confidence + (1 - confidence) * decay ** distance``."""
    c = options.confidence
    return c + (1.0 - c) * options.decay ** max(int(distance), 0) if options.decay else c


def propagation_plan(source: int, n_frames: int, options: PropagateOptions
                     ) -> list[tuple[int, int]]:
    """(target, previous) pairs in the order they are done: forward then backward, each
    chain stepping one frame at a time away from `source`, clipped to the video."""
    plan = []
    if options.direction in ("both", "forward"):
        stop = min(n_frames - 1, source + options.frames)
        plan += [(t, t - 1) for t in range(source + 1, stop + 1)]
    if options.direction in ("both", "backward"):
        stop = max(0, source - options.frames)
        plan += [(t, t + 1) for t in range(source - 1, stop - 1, -1)]
    return plan


# -- the loop ----------------------------------------------------------------------------------
def iter_propagate(
    frames: np.ndarray,
    labels: np.ndarray,
    source: int,
    *,
    options: PropagateOptions | None = None,
    model_labels: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    num_classes: int | None = None,
    model_frames: Iterable[int] | None = None,
    keep: Iterable[int] = (),
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[PropagatedFrame]:
    """Propagate frame `source`'s labels to its neighbours; yields one
    :class:`PropagatedFrame` per frame written (frames in `keep` are passed through, not
    yielded).

    Args:
        frames: (T, H, W) or (T, H, W, 3) raw video, any dtype (only the frames used are
            converted).
        labels: (T, H, W) integer labels; ``labels[source]`` is propagated, and the labels of
            the `keep` frames continue the chain through them. Not modified.
        source: the corrected frame to start from.
        model_labels: (T, H, W) the model's labels (may be `labels` itself), or None: no fusion.
        uncertainty: (T, H, W) the model's per-pixel entropy in nats, needed with model_labels.
        num_classes: C of the model (for ``ln C``); default ``max label + 1`` (at least 2).
        model_frames: frames whose model_labels / uncertainty are the model's own answer
            (default: all); other frames take the warped labels as they are.
        keep: frames never written (verified or painted by the user).
        should_stop: polled before each frame; True raises :class:`PropagationCancelled`.

    Raises:
        ValueError: shapes that do not match, a source outside the video, or model labels
            without uncertainty.
        PropagationCancelled: `should_stop` returned True.
    """
    options = options or PropagateOptions()
    frames = np.asarray(frames) if not hasattr(frames, "shape") else frames
    t_count, h, w = frames.shape[:3]
    if tuple(labels.shape) != (t_count, h, w):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the video's "
                         f"frames {(t_count, h, w)}")
    if not 0 <= int(source) < t_count:
        raise ValueError(f"source frame {source} is outside the video (0 to {t_count - 1})")
    source = int(source)
    if model_labels is not None:
        if uncertainty is None:
            raise ValueError("model_labels need the model's uncertainty (entropy) to be fused")
        for name, array in (("model_labels", model_labels), ("uncertainty", uncertainty)):
            if tuple(array.shape) != (t_count, h, w):
                raise ValueError(f"{name} of shape {tuple(array.shape)} do not match the "
                                 f"video's frames {(t_count, h, w)}")
        if num_classes is None:
            num_classes = int(max(np.max(labels[source]), 1)) + 1
    has_model = set(range(t_count)) if model_frames is None else {int(i) for i in model_frames}
    kept = {int(i) for i in keep}
    plan = propagation_plan(source, t_count, options)
    total = sum(1 for target, _ in plan if target not in kept)
    lo, hi = video_range(frames)
    image_cache: dict[int, np.ndarray] = {}

    def image(i: int) -> np.ndarray:
        if i not in image_cache:
            if len(image_cache) > 4:
                image_cache.pop(next(iter(image_cache)))
            image_cache[i] = _flow_image(frames[i], lo, hi)
        return image_cache[i]

    current = {source: np.asarray(labels[source]).astype(np.uint8)}
    t0 = time.perf_counter()
    done = 0
    for target, previous in plan:
        if should_stop is not None and should_stop():
            raise PropagationCancelled(f"propagation stopped after {done} of {total} frames")
        if target in kept:  # the user's labels: go on from them, never write them
            current[target] = np.asarray(labels[target]).astype(np.uint8)
            continue
        flow = frame_flow(image(target), image(previous), method=options.method,
                          max_size=options.max_size)
        warped = warp_labels(current[previous], flow)
        fused, unc, agreement = warped, None, None
        if model_labels is not None and target in has_model:
            model = np.asarray(model_labels[target]).astype(np.uint8)
            entropy = np.asarray(uncertainty[target], dtype=np.float32)
            fused = fuse(warped, model, entropy, num_classes,
                         threshold(options, abs(target - source)))
            agree = warped == model
            unc = np.where(agree, entropy * options.agreement_factor, entropy)
            agreement = float(agree.mean())
        current[target] = fused
        done += 1
        yield PropagatedFrame(index=target, previous=previous, source=source, labels=fused,
                              uncertainty=None if unc is None else unc.astype(np.float32),
                              agreement=agreement, done=done, total=total,
                              elapsed_s=time.perf_counter() - t0)
    logger.info("propagated frame %d to %d frames in %.2f s", source, done,
                time.perf_counter() - t0)


def propagate(frames: np.ndarray, labels: np.ndarray, source: int, **kwargs
              ) -> list[PropagatedFrame]:
    """All of :func:`iter_propagate`'s frames as a list (same arguments)."""
    return list(iter_propagate(frames, labels, source, **kwargs))


def propagate_sources(frames: np.ndarray, labels: np.ndarray, sources: Iterable[int], *,
                      keep: Iterable[int] = (), **kwargs) -> dict[int, PropagatedFrame]:
    """Propagate several corrected frames; each frame reached takes the proposal of its
    nearest source (the earlier source on a tie). Same arguments as :func:`iter_propagate`
    (`sources` are added to `keep`: a source is never written). Returns frame -> proposal."""
    sources = sorted({int(s) for s in sources})
    kept = {int(i) for i in keep} | set(sources)
    best: dict[int, PropagatedFrame] = {}
    for source in sources:
        for item in iter_propagate(frames, labels, source, keep=kept, **kwargs):
            held = best.get(item.index)
            if held is None or abs(item.index - source) < abs(item.index - held.source):
                best[item.index] = item
    return best


def anchor_targets(frames: np.ndarray, labels: np.ndarray, sources: Iterable[int], *,
                   distance: int = 3, method: str = "tvl1", max_size: int = 256,
                   decay: float = 0.85, tolerance: float = 0.1,
                   should_stop: Callable[[], bool] | None = None,
                   ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Anchors for semi-supervised training: the labels of the verified frames `sources`
    carried along the video's motion to the frames up to `distance` away, with a confidence.

    Each frame within `distance` of a source (and not a source itself) gets the labels of its
    nearest source (the earlier on a tie), warped one frame at a time as :func:`iter_propagate`
    does but without any model, and a per-pixel confidence in [0, 1]: ``decay ** d`` at d
    frames from the source, times, at every step, how well the flow explains the frame
    (``exp(-|target - warped previous| / tolerance)`` on the video's [0, 1] intensities,
    lightly smoothed), so that where the motion was not followed the anchor is not trusted.
    Returns frame -> (labels (H, W) uint8, confidence (H, W) float16)."""
    from scipy.ndimage import uniform_filter

    frames = np.asarray(frames)
    n = frames.shape[0]
    sources = sorted({int(s) for s in sources if 0 <= int(s) < n})
    lo, hi = video_range(frames)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    best: dict[int, int] = {}
    for source in sources:
        for direction in (1, -1):
            lab = np.asarray(labels[source], dtype=np.uint8)
            conf = np.ones(lab.shape, dtype=np.float32)
            previous = _flow_image(frames[source], lo, hi)
            for d in range(1, distance + 1):
                target = source + direction * d
                if not 0 <= target < n or target in sources:
                    break
                if should_stop is not None and should_stop():
                    raise PropagationCancelled
                image = _flow_image(frames[target], lo, hi)
                flow = frame_flow(image, previous, method=method, max_size=max_size)
                lab = warp_labels(lab, flow)
                residual = np.abs(image - warp_labels(previous, flow))
                fit = np.exp(-uniform_filter(residual, size=5) / max(tolerance, 1e-6))
                conf = warp_labels(conf, flow) * fit.astype(np.float32)
                previous = image
                held = best.get(target)
                if held is None or d < abs(target - held):
                    best[target] = source
                    out[target] = (lab.copy(), (conf * decay**d).astype(np.float16))
    return out
