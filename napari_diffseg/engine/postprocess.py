"""Label clean-up after sampling.

* :func:`remove_specks`: isolated specks of a class become background. A diffusion sample
  scatters a few pixels of vessel or guidewire on background texture; such specks are far
  from any true structure and dominate the Hausdorff distance (HD95) while adding nothing a
  user would keep.
* :func:`keep_hidden_wire`: a guidewire that the contrast bolus hides stays labelled. Inside a
  lumen full of contrast the wire is as dark as the iodine around it and no single frame shows
  it; the frames before the bolus and after the wash-out do, and a wire does not leave during
  an injection.
* :func:`drop_unseen_wire`: the converse. A wire that no frame of the video shows outside the
  vessel is the network's guess that a wire could lie in that lumen (its training labels put
  wires there), not something it saw; it becomes vessel again.
* :func:`track_wire` runs the two, in that order, over one video.
* :func:`clean_video_runs` is the whole-video step of `segment`, the dock and `evaluate`: the
  two below, static vessel first, then the wire.
* :func:`drop_static_vessel`: vessel that does not come with the contrast. Contrast fills the
  vessels for part of a cine; lung markings, surgical clips, marker rings, wires and a
  guiding catheter look the same in every frame. Where a video has frames without contrast
  (before the injection, after the wash-out), a vessel label over a structure those frames
  show just as dark is background seen as vessel, and goes (the mask image of digital
  subtraction angiography, used as evidence rather than subtracted).

Numpy, scipy and scikit-image only.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.morphology import remove_small_objects

#: scikit-image >= 0.26 names the threshold max_size (removes sizes <= max_size), older ones
#: min_size (removes sizes < min_size)
_MAX_SIZE = "max_size" in inspect.signature(remove_small_objects).parameters

#: Frame area the minimum component size is quoted at (512 x 512, MOSXAV's frame size).
REFERENCE_AREA = 512 * 512


def min_component_pixels(min_component: int, shape: tuple[int, int]) -> int:
    """`min_component` pixels at 512 x 512, scaled to a frame of `shape` (at least 1)."""
    return max(1, round(min_component * shape[0] * shape[1] / REFERENCE_AREA))


def remove_specks(labels: np.ndarray, min_component: int) -> np.ndarray:
    """labels (H, W) or (T, H, W) uint8 -> the same with every 8-connected component of a
    foreground class smaller than `min_component` pixels (quoted at 512 x 512, scaled to the
    frame's area) set to background 0. 0 leaves the labels as they are. A new array."""
    out = np.array(labels, copy=True)
    if min_component <= 0:
        return out
    frames = out.reshape(-1, *out.shape[-2:])
    size = min_component_pixels(min_component, frames.shape[-2:])
    for frame in frames:
        for k in np.unique(frame):
            if k == 0:
                continue
            mask = frame == k
            if _MAX_SIZE:
                kept = remove_small_objects(mask, max_size=size - 1, connectivity=2)
            else:
                kept = remove_small_objects(mask, min_size=size, connectivity=2)
            frame[mask & ~kept] = 0
    return out


#: :func:`keep_hidden_wire`'s settings, quoted at 512 x 512: a frame shows the wire when it
#: labels at least ``WIRE_SEEN`` px of it (pixels, scaled with the frame's area); a carried
#: wire pixel within ``WIRE_GAP`` px of a wire the frame labels itself is that wire, already
#: there; the forward and backward carries agree within ``WIRE_AGREE`` px (both lengths
#: scaled with the frame's side). Chosen on the validation videos of seeds 200,000 and
#: 300,000 (docs/model.md): 100 px let a short false wire be carried through a run of frames
#: (seeds 200,000), 400 misses wires the model sees only in part; the two lengths hardly
#: matter from 2 to 6 px.
WIRE_SEEN = 200
WIRE_GAP = 4
WIRE_AGREE = 3


def hidden_wire_classes(classes) -> tuple[int, int] | None:
    """(guidewire id, vessel id) from a ``{id: name}`` class map, or None if it lacks
    either (then :func:`keep_hidden_wire` has nothing to do)."""
    ids = {str(name).lower(): int(k) for k, name in dict(classes).items()}
    if "guidewire" in ids and "vessel" in ids:
        return ids["guidewire"], ids["vessel"]
    return None


def _carry(labels: np.ndarray, order, wire: int, vessel: int, gap: float) -> dict:
    """Wire pixels carried along `order` into the vessel of each frame: {frame: (H, W) bool}.

    The memory is the last frame's wire, seen or carried; in the next frame the part of it
    that falls on that frame's vessel (grown by 1 px for the motion between two frames) and
    is not next to a wire the frame labels itself is kept as hidden wire. Memory that falls
    on background is dropped: a wire there would be visible, and the model would label it.
    """
    carried: dict[int, np.ndarray] = {}
    memory = None
    for t in order:
        seen = labels[t] == wire
        if memory is None:
            carried[t] = np.zeros_like(seen)
            memory = seen
            continue
        lumen = ndimage.binary_dilation(labels[t] == vessel)
        if seen.any():
            lumen &= ndimage.distance_transform_edt(~seen) > gap
        carried[t] = memory & lumen
        memory = seen | carried[t]
    return carried


def keep_hidden_wire(labels: np.ndarray, wire: int, vessel: int, *,
                     seen: int = WIRE_SEEN, gap: float = WIRE_GAP,
                     agree: float = WIRE_AGREE, trusted=()) -> np.ndarray:
    """labels (T, H, W) of consecutive frames of one video -> a copy in which the guidewire
    hidden under the contrast bolus is labelled `wire` again.

    The wire is carried frame to frame forward and backward (:func:`_carry`), through the
    frames' vessel only. A frame gets a carried pixel when both carries bring it (within
    `agree` px of each other), and only when the wire was seen (at least `seen` px labelled)
    in an earlier and in a later frame: a wire the model saw once, or a short false one, is
    not carried. `seen` is quoted at 512 x 512 and scaled with the frame's area, `gap` and
    `agree` with its side. The frames of `labels` must be consecutive; a single frame is
    returned as it is. `trusted`: positions of frames whose labels are the user's (verified or
    painted): they are evidence (a wire there counts as seen whatever its length, and the
    carries pass through them as through any frame) and are returned unchanged.
    """
    out = np.array(labels, copy=True)
    if out.ndim != 3 or out.shape[0] < 3:
        return out
    n, h, w = out.shape
    side = (h * w / REFERENCE_AREA) ** 0.5
    gap_px, agree_px = gap * side, max(1, round(agree * side))
    trusted = frozenset(int(t) for t in trusted)
    counts = np.count_nonzero(out.reshape(n, -1) == wire, axis=1)
    shown = counts >= min_component_pixels(seen, (h, w))
    shown[[t for t in trusted if counts[t] > 0]] = True
    before = np.maximum.accumulate(shown)              # seen at or before t
    after = np.maximum.accumulate(shown[::-1])[::-1]   # seen at or after t
    todo = np.flatnonzero(before & after)  # from the first frame that shows it to the last
    if todo.size < 3:
        return out
    first, last = int(todo.min()), int(todo.max())
    forward = _carry(out, range(first, last + 1), wire, vessel, gap_px)
    backward = _carry(out, range(last, first - 1, -1), wire, vessel, gap_px)
    for t in todo[1:-1]:
        if t in trusted:
            continue
        f, b = forward[t], backward[t]
        hidden = (f & ndimage.binary_dilation(b, iterations=agree_px)) \
            | (b & ndimage.binary_dilation(f, iterations=agree_px))
        out[t][hidden] = wire
    return out


#: :func:`drop_unseen_wire`: a video shows its wire when some frame labels at least this many
#: wire pixels (at 512 x 512, scaled with the frame's area) away from the vessel. Wires the
#: videos of seeds 200,000 and 300,000 have showed 390-709 px there, the false ones 0 (and
#: on 8 fresh videos drawn afterwards, seeds 400,000: 326-581 px and 0).
WIRE_OUTSIDE = 100


def drop_unseen_wire(labels: np.ndarray, wire: int, vessel: int, *,
                     outside: int = WIRE_OUTSIDE, trusted=()) -> np.ndarray:
    """labels (T, H, W) of one video -> a copy without its guidewire if no frame labels at
    least `outside` px of wire (quoted at 512 x 512) more than 2 px away from that frame's
    vessel; the dropped wire pixels become vessel (those within 2 px of it) or background.
    Fewer than 3 frames are returned as they are: one frame cannot tell. `trusted`: positions
    of frames whose labels are the user's; a wire in any of them shows the video's wire (the
    copy is returned unchanged)."""
    out = np.array(labels, copy=True)
    if out.ndim != 3 or out.shape[0] < 3:
        return out
    if any((out[int(t)] == wire).any() for t in trusted):
        return out  # the user labelled a wire
    need = min_component_pixels(outside, out.shape[1:])
    near = []
    for frame in out:
        seen = frame == wire
        if not seen.any():
            near.append(None)
            continue
        lumen = ndimage.binary_dilation(frame == vessel, iterations=2)
        if np.count_nonzero(seen & ~lumen) >= need:
            return out  # the video shows its wire
        near.append(lumen)
    for frame, lumen in zip(out, near, strict=True):
        if lumen is not None:
            seen = frame == wire
            frame[seen & lumen] = vessel
            frame[seen & ~lumen] = 0
    return out


def track_wire(labels: np.ndarray, wire: int, vessel: int, trusted=()) -> np.ndarray:
    """The guidewire judged over the whole video: :func:`drop_unseen_wire`, then
    :func:`keep_hidden_wire`. labels (T, H, W), consecutive frames of one video; `trusted`:
    positions of the frames whose labels are the user's (evidence, left unchanged)."""
    return keep_hidden_wire(drop_unseen_wire(labels, wire, vessel, trusted=trusted),
                            wire, vessel, trusted=trusted)


def consecutive_runs(indices) -> list[list[int]]:
    """Frame indices, sorted, cut into runs of consecutive frames: [0, 1, 2, 5, 6] ->
    [[0, 1, 2], [5, 6]]."""
    order = sorted({int(i) for i in indices})
    runs: list[list[int]] = []
    for i in order:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def track_wire_runs(labels: np.ndarray, indices, wire: int, vessel: int,
                    trusted=()) -> dict[int, np.ndarray]:
    """:func:`track_wire` over each run of consecutive frames among `indices` and `trusted`
    of `labels` (T, H, W): `indices` are the frames a segmentation wrote, `trusted` those
    whose labels are the user's (verified or painted), evidence that joins the runs and is
    never changed. Returns ``{frame: new labels}`` for the frames it changed."""
    return _changed_over_runs(
        labels, indices, trusted,
        lambda run, mine: track_wire(labels[run], wire, vessel, trusted=mine))


def _changed_over_runs(labels: np.ndarray, indices, trusted, clean,
                       min_frames: int = 1) -> dict[int, np.ndarray]:
    """``clean(run, mine)`` (the new labels of the frames `run`; `mine`: positions in it of
    the trusted frames) over each run of consecutive frames among `indices` and `trusted`
    that has a frame to change and at least `min_frames` frames; ``{frame: new labels}`` of
    the untrusted frames whose labels it changed."""
    trusted = {int(t) for t in trusted}
    changed: dict[int, np.ndarray] = {}
    for run in consecutive_runs(set(int(i) for i in indices) | trusted):
        mine = [k for k, frame in enumerate(run) if frame in trusted]
        if len(mine) == len(run) or len(run) < min_frames:
            continue
        cleaned = clean(run, mine)
        for k, frame in enumerate(run):
            if frame not in trusted and (cleaned[k] != labels[frame]).any():
                changed[frame] = cleaned[k]
    return changed


def wire_changes(before: np.ndarray, changed: dict[int, np.ndarray],
                 wire: int) -> tuple[list[int], list[int]]:
    """The frames of `changed` (:func:`track_wire_runs`) sorted into (kept hidden, dropped):
    those that gained wire pixels over `before` (T, H, W), where a hidden wire was kept, and
    the others, which lost theirs (:func:`drop_unseen_wire`): a video's wire is either
    dropped whole or carried."""
    kept = sorted(f for f, new in changed.items()
                  if np.count_nonzero(new == wire) > np.count_nonzero(before[f] == wire))
    return kept, sorted(set(changed) - set(kept))


#: :func:`drop_static_vessel`'s settings, chosen on generated videos of seeds 300,000 and
#: 400,000 (with and without the lung strands) and checked on seeds 600,000 (docs/model.md):
#: frames whose vessel area is at most ``STATIC_REFERENCE`` of the video's largest are its
#: reference (contrast-free) frames, at least ``STATIC_MIN_REFERENCE`` of them (else the
#: smallest ones, if at most ``STATIC_FALLBACK`` of the largest; else nothing is done); a
#: vessel component (or a part of one of at least ``STATIC_PART`` px, quoted at 512 x 512)
#: whose darkening since the reference frames is under ``STATIC_RATIO`` of its darkness
#: against its surroundings is static.
STATIC_REFERENCE = 0.25
STATIC_MIN_REFERENCE = 2
STATIC_FALLBACK = 0.5
STATIC_RATIO = 0.35
STATIC_PART = 64


def vessel_class(classes) -> int | None:
    """The id of the class named "vessel" in `classes` ({id: name}), or None."""
    for k, name in dict(classes).items():
        if str(name).lower() == "vessel":
            return int(k)
    return None


def video_step_applies(classes, *, static: bool = True, wire: bool = True) -> bool:
    """Whether :func:`clean_video_runs` has anything to do for `classes` ({id: name}): the
    static-vessel step needs a "vessel" class, the wire tracking a guidewire and a vessel."""
    return ((wire and hidden_wire_classes(classes) is not None)
            or (static and vessel_class(classes) is not None))


def drop_static_vessel(frames: np.ndarray, labels: np.ndarray, vessel: int, *,
                       trusted=(), fallback: bool = True) -> np.ndarray:
    """Vessel labels over structures the video's contrast-free frames show as dark: background.

    frames (T, H, W) (or (T, H, W, C), or any sequence of T such frames, read one at a time) and
    labels (T, H, W) of consecutive frames of one video; `trusted`: positions of the frames
    whose labels are the user's (evidence, left unchanged). The reference frames are those with
    the least vessel (see :data:`STATIC_REFERENCE`); their median (after a Gaussian of 1.5 px)
    is the video without contrast. In every other frame and in the reference frames themselves,
    a vessel component is compared with it: its median darkening since the reference, over its
    median darkness against its surroundings (a grey closing of 25 px, scaled), is near 1 for a
    lumen that filled and near 0 for a lung marking, clip, wire or catheter that was already
    there. Static components become background, and so do static parts of at least
    :data:`STATIC_PART` px (quoted at 512 x 512) of the components kept (a catheter stretch
    joined to the tree). A video without reference frames (contrast throughout, or one frame) is
    left as it is. `fallback` False: only frames under :data:`STATIC_REFERENCE` count as
    reference frames (for labels whose vessel area says less about the contrast, such as
    pseudo-labels with a vesselness prior's ridges). Returns a new array.
    """
    labels = np.asarray(labels)
    out = labels.copy()
    n = len(labels)
    area = np.array([(frame == vessel).sum() for frame in labels], dtype=float)
    if n < 3 or area.max() <= 0:
        return out
    reference = np.flatnonzero(area <= STATIC_REFERENCE * area.max())
    if len(reference) < STATIC_MIN_REFERENCE:
        if not fallback:
            return out
        reference = np.argsort(area, kind="stable")[:STATIC_MIN_REFERENCE]
        if area[reference].max() > STATIC_FALLBACK * area.max():
            return out
    if len(frames) != n:
        raise ValueError(f"{len(frames)} frames and {n} label maps differ in number")
    scale = min(labels.shape[1:]) / 512.0
    closing = max(3, int(round(25 * scale)) | 1)
    part = min_component_pixels(STATIC_PART, labels.shape[1:])
    sigma = 1.5 * max(scale, 0.5)

    def smoothed(t: int) -> np.ndarray:
        # one frame at a time: a 1024 px cine of 120 frames held as float32 twice over (gray
        # and smoothed) took 1 GB more than segmenting it (docs/benchmarks.md, memory)
        frame = np.asarray(frames[t])
        if frame.ndim == 3:  # (H, W, C) colour
            frame = frame.mean(axis=-1)
        if frame.shape != labels.shape[1:]:
            raise ValueError(f"frames {(n, *frame.shape)} and labels {labels.shape} differ "
                             "in shape")
        return ndimage.gaussian_filter(frame.astype(np.float32), sigma)

    cached = {int(t): smoothed(int(t)) for t in reference}
    background = np.median(np.stack(list(cached.values())), axis=0)
    trusted = {int(t) for t in trusted}
    eight = np.ones((3, 3), dtype=bool)
    for t in range(n):
        mask = labels[t] == vessel
        if t in trusted or not mask.any():
            continue
        smooth = cached[t] if t in cached else smoothed(t)
        dark = ndimage.grey_closing(smooth, size=(closing, closing)) - smooth
        change = background - smooth
        comp, count = ndimage.label(mask, structure=eight)
        ids = np.arange(1, count + 1)
        ratio = (np.asarray(ndimage.median(change, comp, ids))
                 / np.maximum(np.asarray(ndimage.median(dark, comp, ids)), 1e-3))
        static = np.isin(comp, ids[ratio < STATIC_RATIO])
        kept = mask & ~static
        local = (ndimage.uniform_filter(change, 5)
                 / np.maximum(ndimage.uniform_filter(dark, 5), 1e-3))
        parts, m = ndimage.label(kept & (local < STATIC_RATIO), structure=eight)
        if m:
            sizes = np.asarray(ndimage.sum(parts > 0, parts, np.arange(1, m + 1)))
            static |= np.isin(parts, np.flatnonzero(sizes >= part) + 1)
        out[t][static] = 0
    return out


class _Frames:
    """Frames `run` of `frames`, indexed 0..len(run) - 1, read when asked for."""

    def __init__(self, frames, run) -> None:
        self.frames, self.run = frames, list(run)

    def __len__(self) -> int:
        return len(self.run)

    def __getitem__(self, k: int) -> np.ndarray:
        return np.asarray(self.frames[self.run[k]])


def drop_static_vessel_runs(frames: np.ndarray, labels: np.ndarray, indices, vessel: int,
                            trusted=(), fallback: bool = True) -> dict[int, np.ndarray]:
    """:func:`drop_static_vessel` over each run of consecutive frames among `indices` and
    `trusted` of `labels` (T, H, W) and `frames` (T, H, W[, C]), as :func:`track_wire_runs`
    does: `trusted` frames are evidence and never changed. Returns ``{frame: new labels}``
    for the frames it changed."""
    def clean(run, mine):
        # the run's frames are read one at a time (a lazy video too), never stacked
        return drop_static_vessel(_Frames(frames, run), labels[run], vessel, trusted=mine,
                                  fallback=fallback)

    return _changed_over_runs(labels, indices, trusted, clean, min_frames=3)


@dataclass
class VideoCleanup:
    """What :func:`clean_video_runs` did: ``changed`` {frame: new labels} (the frames whose
    labels differ from the input), ``static`` the frames that lost static vessel
    (:func:`drop_static_vessel`), ``kept_hidden`` / ``dropped`` the frames whose guidewire
    was kept under the bolus / dropped (:func:`track_wire`, :func:`wire_changes`)."""

    changed: dict[int, np.ndarray] = field(default_factory=dict)
    static: list[int] = field(default_factory=list)
    kept_hidden: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def apply(self, labels) -> None:
        """Write the ``changed`` frames into `labels` ((T, H, W) array, or anything indexed
        by the same frame numbers), in place."""
        for frame, new in self.changed.items():
            labels[frame] = new


def clean_video_runs(frames: np.ndarray | None, labels: np.ndarray, indices, classes, *,
                     trusted=(), static: bool = True, wire: bool = True) -> VideoCleanup:
    """The whole-video step after a segmentation, over each run of consecutive frames among
    `indices` (the frames it wrote) and `trusted` (the user's frames: evidence, never
    changed) of `labels` (T, H, W): :func:`drop_static_vessel_runs` (`static`, with
    `frames` and a "vessel" class), then :func:`track_wire_runs` (`wire`, with a guidewire
    and a vessel class). `labels` is not modified."""
    labels = np.asarray(labels)
    out = VideoCleanup()
    current = labels
    vessel = vessel_class(classes)
    if static and vessel is not None and frames is not None:
        gone = drop_static_vessel_runs(frames, labels, indices, vessel, trusted=trusted)
        if gone:
            current = labels.copy()
            for frame, new in gone.items():
                current[frame] = new
            out.changed.update(gone)
            out.static = sorted(gone)
    pair = hidden_wire_classes(classes) if wire else None
    if pair is not None:
        tracked = track_wire_runs(current, indices, *pair, trusted=trusted)
        out.kept_hidden, out.dropped = wire_changes(current, tracked, pair[0])
        out.changed.update(tracked)
    out.changed = {f: new for f, new in sorted(out.changed.items())
                   if (new != labels[f]).any()}
    return out


def clean_video(frames: np.ndarray | None, labels: np.ndarray, classes, *, min_component: int,
                static: bool = True, wire: bool = True) -> np.ndarray:
    """The labels ``segment`` writes for a whole video segmented at once: specks under
    `min_component` px removed (:func:`remove_specks`), then the whole-video step
    (:func:`clean_video_runs` over every frame, none trusted). A new (T, H, W) array."""
    out = remove_specks(labels, min_component)
    clean_video_runs(frames, out, range(len(out)), classes, static=static, wire=wire).apply(out)
    return out
