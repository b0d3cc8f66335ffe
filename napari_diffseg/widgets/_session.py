"""One video being annotated: its image layer, our two layers, and the project state.

The state (verified / edited frames, uncertainty scores, model) is a
:class:`~napari_diffseg.io.project.ProjectState`, the data that autosave writes and reopening
restores; this class keeps it in step with the napari layers. No Qt widgets here.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from pathlib import Path

import numpy as np

from napari_diffseg._layers import (
    class_colormap,
    labels_layer_kwargs,
    uncertainty_layer_kwargs,
    uncertainty_limits,
)
from napari_diffseg.io.model_history import model_name
from napari_diffseg.io.project import (
    PROJECT_DIR_KEY,
    SOURCE_PROPAGATED,
    SOURCE_USER,
    ProjectState,
    clean_project_folder,
    has_project,
    load_project,
    project_dir_for,
    user_projects_dir,
)

logger = logging.getLogger(__name__)

#: metadata key marking the layers this plugin made (so it never touches the user's own)
OWNER_KEY = "napari_diffseg"

#: a frame's review status, as the table, the strip and the canvas show it
STATUS_VERIFIED = "verified"
STATUS_EDITED = "edited"
STATUS_PROPOSED = "proposed"
STATUS_PROPAGATED = "propagated"
STATUS_NONE = "-"


def image_source(layer) -> Path | None:
    """The file or folder an image layer was read from, if known."""
    source = (layer.metadata or {}).get("source")
    if not source and getattr(layer, "source", None) is not None and layer.source.path:
        source = layer.source.path
    return Path(source) if source else None


def frames_of(layer) -> np.ndarray:
    """(T, H, W) or (T, H, W, 3) frames of an image layer (a single image counts as T=1)."""
    data = layer.data
    ndim = data.ndim - (1 if layer.rgb else 0)
    if ndim == 2:
        return np.asarray(data)[None]
    if ndim != 3:
        raise ValueError(
            f"layer {layer.name!r} has {ndim} dimensions; a video is (frames, height, width)"
        )
    return data


def frame_status(state: ProjectState, frame: int) -> str:
    """A frame's STATUS_*: verified beats edited (painted) beats propagated beats proposed
    (segmented); see :meth:`ProjectState.status`."""
    return state.status(frame)


def frames_in_atom(atom, n_frames: int) -> set[int]:
    """Frame indices touched by one napari Labels history atom (masked atom or 3-tuple)."""
    key = getattr(atom, "slice_key", None)
    if key is not None:
        first = key[0]
        if isinstance(first, slice):
            return set(range(*first.indices(n_frames)))
        return {int(first)}
    indices = atom[0]
    first = indices[0] if isinstance(indices, tuple) else indices
    return {int(i) for i in np.unique(np.asarray(first))}


HISTORY_LIMIT = 100  # napari's Labels keeps this many undo steps


def watch_undo_redo(layer, callback) -> None:
    """Call ``callback(layer, atoms, undoing)`` after napari's ``layer.undo()`` /
    ``layer.redo()`` (Ctrl+Z, Ctrl+Shift+Z, the layer's buttons), which emit no paint event
    (and no event at all while the layer is hidden). ``atoms`` is the history item replayed,
    from a mirror of napari's undo stack kept from the paint events (napari's own is
    private); ``None`` when the mirror does not know it (strokes made before watching).
    Wraps the layer's two public methods, once."""
    if getattr(layer.undo, "diffseg_mirror", None) is not None:
        return
    undo_items: deque = deque(maxlen=HISTORY_LIMIT)
    redo_items: deque = deque(maxlen=HISTORY_LIMIT)

    def painted(event) -> None:
        undo_items.append(list(event.value or []))
        redo_items.clear()

    def editable_changed(event=None) -> None:
        if not layer.editable:  # napari clears its history then
            undo_items.clear()
            redo_items.clear()

    layer.events.paint.connect(painted)
    layer.events.editable.connect(editable_changed)
    for name, source, target, undoing in (("undo", undo_items, redo_items, True),
                                          ("redo", redo_items, undo_items, False)):
        original = getattr(layer, name)

        def replay(*args, _original=original, _source=source, _target=target,
                   _undoing=undoing, **kwargs):
            item = _source.pop() if _source else None
            result = _original(*args, **kwargs)
            if item is not None:
                _target.append(item)
            callback(layer, item, _undoing)
            return result

        replay.diffseg_mirror = (undo_items, redo_items)
        setattr(layer, name, replay)


class AnnotationSession:
    """Links a video's Image layer to `<video> pseudo-labels`, `<video> uncertainty` and the
    project folder. frames: (T, H, W[, 3]); labels: (T, H, W) uint8."""

    def __init__(self, viewer, image_layer, project_dir: str | Path | None = None) -> None:
        self.viewer = viewer
        self.image = image_layer
        self.frames = frames_of(image_layer)
        t, h, w = self.frames.shape[:3]
        self.shape = (int(t), int(h), int(w))
        meta = image_layer.metadata or {}
        self.source = image_source(image_layer)
        if project_dir is None and meta.get(PROJECT_DIR_KEY):
            project_dir = meta[PROJECT_DIR_KEY]
        if project_dir is not None:
            self.project_dir = Path(project_dir)
        elif self.source is not None:
            self.project_dir = project_dir_for(self.source, meta.get("sequence"))
        else:
            self.project_dir = user_projects_dir() / f"{image_layer.name}.diffseg"
        names = meta.get("frame_names") or []
        self.state = ProjectState(
            video=str(self.source or ""),
            sequence=str(meta.get("sequence") or image_layer.name),
            shape=self.shape,
            frame_names=list(names) if len(names) == t else [],
            classes=dict(meta.get("classes") or {}),
        )
        self.labels_layer = None
        self.uncertainty_layer = None
        self.dirty_frames: set[int] = set()
        # history items of napari's undo stack that touch each frame, and the frames that
        # were edited before any of them: undoing every stroke on a frame un-edits it
        self._strokes: dict[int, int] = {}
        self._edited_before: set[int] = set()
        self._source_before: dict[int, str | None] = {}
        self.dirty_state = False
        self.dirty_uncertainty = False

    # -- layers ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.image.name

    @property
    def labels_name(self) -> str:
        return f"{self.name} pseudo-labels"

    @property
    def uncertainty_name(self) -> str:
        return f"{self.name} uncertainty"

    def _find_own(self, name: str, kind: str):
        for layer in self.viewer.layers:
            own = (layer.metadata or {}).get(OWNER_KEY, {})
            if layer.name == name and own.get("role") == kind:
                return layer
        return None

    def ensure_layers(self, classes: dict[int, str] | None = None, *,
                      expected: bool = False) -> None:
        """Create (or find again) the pseudo-labels and uncertainty layers; never touches a
        layer the user made, even one with the same name. `expected`: the classes are the
        model's, known before it ran; they name the layers' colours but are not an edit to
        save."""
        if classes:
            dirty = self.dirty_state
            self.set_classes(classes)
            if expected:
                self.dirty_state = dirty
        if self.labels_layer is None or self.labels_layer not in self.viewer.layers:
            self.labels_layer = self._find_own(self.labels_name, "labels")
        if self.labels_layer is None:
            kwargs = labels_layer_kwargs(
                self.labels_name, self.state.classes, max(self.state.classes, default=0),
                {OWNER_KEY: {"role": "labels", "video": self.name}},
            )
            kwargs["scale"] = tuple(self.image.scale[-3:])
            self.labels_layer = self.viewer.add_labels(
                np.zeros(self.shape, dtype=np.uint8), **kwargs
            )
            self.viewer.layers.selection.active = self.labels_layer
        if self.uncertainty_layer is None or self.uncertainty_layer not in self.viewer.layers:
            self.uncertainty_layer = self._find_own(self.uncertainty_name, "uncertainty")
        if self.uncertainty_layer is None:
            self.uncertainty_layer = self.viewer.add_image(
                np.zeros(self.shape, dtype=np.float32),
                scale=tuple(self.image.scale[-3:]),
                **uncertainty_layer_kwargs(
                    self.uncertainty_name, len(self.state.classes),
                    {OWNER_KEY: {"role": "uncertainty", "video": self.name}},
                ),
            )
            self.uncertainty_layer.colorbar.visible = True
            # added last, the uncertainty layer is selected: give the paint tools back
            self.viewer.layers.selection.active = self.labels_layer

    def set_classes(self, classes: dict[int, str]) -> None:
        classes = {int(k): str(v) for k, v in classes.items()}
        if classes == self.state.classes:
            return
        self.state.classes = classes
        self.dirty_state = True
        if self.labels_layer is not None:
            kwargs = labels_layer_kwargs(self.labels_name, classes, max(classes, default=0), {})
            self.labels_layer.colormap = class_colormap(classes, max(classes, default=0))
            self.labels_layer.features = kwargs.get("features", {})
        if self.uncertainty_layer is not None:
            # the scale follows the class count, which a segmentation or a reopened project
            # may be the first to tell
            self.uncertainty_layer.contrast_limits = uncertainty_limits(len(classes))

    # -- model results ---------------------------------------------------------------------
    def protected(self, frame: int) -> bool:
        """True for frames whose labels came from the user (verified or painted)."""
        return frame in self.state.verified or frame in self.state.edited

    def apply_chunk(self, chunk, shown: int | None = None) -> list[int]:
        """Put a :class:`~napari_diffseg.engine.inference.SegmentChunk` into the layers;
        labels of protected frames are left as the user made them. Returns updated frames.
        With `shown` (the frame on screen) the layers are redrawn only when the chunk holds
        it: napari reads the others from the data when the user goes there, and each redraw
        costs the Qt thread a texture upload."""
        self.ensure_layers()
        labels = self.labels_layer.data
        unc = self.uncertainty_layer.data
        written = []
        if self.state.class_scores is None:
            self.state.class_scores = [[None] * len(self.state.classes)
                                       for _ in range(self.shape[0])]
        source = self.model_name(self.state.model)
        for k, frame in enumerate(np.asarray(chunk.indices).tolist()):
            # the map the review follows (SegmentOptions.uncertainty_map), entropy by default
            unc[frame] = chunk.entropy[k] if chunk.uncertainty is None else chunk.uncertainty[k]
            self.state.frame_scores[frame] = float(chunk.frame_scores[k])
            self.state.class_scores[frame] = [
                None if not np.isfinite(v) else float(v) for v in chunk.class_scores[k]
            ]
            if frame not in self.state.segmented:
                self.state.segmented = sorted({*self.state.segmented, frame})
            if self.protected(frame):
                continue
            labels[frame] = chunk.labels[k]
            self.state.set_source(frame, source)
            written.append(frame)
            self.dirty_frames.add(frame)
        if shown is None or shown in np.asarray(chunk.indices).tolist():
            self.labels_layer.refresh()
            self.uncertainty_layer.refresh()
        self.dirty_state = self.dirty_uncertainty = True
        return written

    def apply_wire_tracking(self, item, shown: int | None = None) -> list[int]:
        """Put a segmentation's :class:`~napari_diffseg.widgets._jobs.WireTracked` frames
        into the labels layer, except those the user has verified or painted (protected).
        Returns the frames written."""
        self.ensure_layers()
        labels = self.labels_layer.data
        written = []
        for k, frame in enumerate(item.indices):
            if self.protected(frame):
                continue
            labels[frame] = item.labels[k]
            written.append(frame)
            self.dirty_frames.add(frame)
        if written and (shown is None or shown in written):
            self.labels_layer.refresh()
        return written

    def model_name(self, path: str | Path | None) -> str | None:
        """How the project names a checkpoint: its history id, "bundled", or its path."""
        return model_name(path, self.project_dir)

    def apply_propagated(self, item, shown: int | None = None) -> bool:
        """Put a :class:`~napari_diffseg.engine.propagate.PropagatedFrame` into the layers
        unless its frame is the user's (verified or painted); True if written. The frame
        becomes "propagated"; its uncertainty scores fall with its uncertainty map."""
        frame = int(item.index)
        if self.protected(frame):
            return False
        self.ensure_layers()
        self.labels_layer.data[frame] = item.labels
        if item.uncertainty is not None:
            unc = self.uncertainty_layer.data
            before = float(np.mean(unc[frame]))
            unc[frame] = item.uncertainty
            ratio = float(np.mean(item.uncertainty)) / before if before > 0 else 1.0
            if self.state.frame_scores[frame] is not None:
                self.state.frame_scores[frame] = float(self.state.frame_scores[frame]) * ratio
            if self.state.class_scores is not None:
                self.state.class_scores[frame] = [
                    None if v is None else float(v) * ratio
                    for v in self.state.class_scores[frame]]
            self.dirty_uncertainty = True
        self.state.set_source(frame, SOURCE_PROPAGATED)
        self.dirty_frames.add(frame)
        self.dirty_state = True
        if shown is None or shown == frame:
            self.labels_layer.refresh()
            self.uncertainty_layer.refresh()
        return True

    # -- user edits ------------------------------------------------------------------------
    def on_paint(self, atoms) -> set[int]:
        """Record the frames a napari paint event (a list of history atoms) changed."""
        frames = self._frames_of(atoms)
        for frame in frames:
            if not self._strokes.get(frame):
                if frame in self.state.edited:
                    self._edited_before.add(frame)
                # who made the labels before these strokes: undoing them all gives it back
                self._source_before[frame] = self.state.label_source[frame]
            self._strokes[frame] = self._strokes.get(frame, 0) + 1
            self.state.set_source(frame, SOURCE_USER)
        if frames:
            self.state.edited = sorted(set(self.state.edited) | frames)
            self.dirty_frames |= frames
            self.dirty_state = True
        return frames

    def on_undo_redo(self, layer, atoms, undoing: bool) -> bool:
        """Record napari's undo (``undoing``) or redo of one history item (a list of atoms)
        on ``layer``: its frames changed like after painting, and a frame whose every stroke
        is undone is no longer edited (unless it was before these strokes). False for
        another video's layer (nothing to save)."""
        if layer is not self.labels_layer:
            return False
        if atoms is None:  # a stroke we did not see: which frames is unknown, save them all
            self.dirty_frames |= set(self.state.verified)
            self.dirty_state = True
            return True
        frames = self._frames_of(atoms)
        edited = set(self.state.edited)
        for frame in frames:
            count = self._strokes.get(frame, 0) + (-1 if undoing else 1)
            self._strokes[frame] = max(count, 0)
            if count > 0 or frame in self._edited_before:
                edited.add(frame)
                self.state.set_source(frame, SOURCE_USER)
            else:
                edited.discard(frame)
                self.state.set_source(frame, self._source_before.get(frame))
        if frames:
            self.state.edited = sorted(edited)
            self.dirty_frames |= frames
            self.dirty_state = True
        return True

    def _frames_of(self, atoms) -> set[int]:
        frames: set[int] = set()
        for atom in atoms or []:
            frames |= frames_in_atom(atom, self.shape[0])
        return frames

    def set_verified(self, frame: int, verified: bool = True) -> None:
        current = set(self.state.verified)
        current.add(frame) if verified else current.discard(frame)
        if sorted(current) != self.state.verified:
            self.state.verified = sorted(current)
            self.dirty_frames.add(frame)
            self.dirty_state = True

    def next_uncertain(self, after: int | None = None) -> int | None:
        """The most uncertain unverified frame (other than `after` when others remain)."""
        ranking = [i for i in self.state.ranking(unverified_only=True)
                   if self.state.frame_scores[i] is not None]
        if not ranking:
            return None
        if after is not None and len(ranking) > 1 and ranking[0] == after:
            return ranking[1]
        return ranking[0]

    def step_uncertain(self, frame: int, step: int) -> int | None:
        """The unverified frame just below (`step` +1, less uncertain) or just above (-1, more
        uncertain) `frame` in the uncertainty ranking; None past either end or when `frame`
        has no score. `frame` itself may be verified (just verified: the walk goes on)."""
        scored = [i for i in self.state.ranking() if self.state.frame_scores[i] is not None]
        if frame not in scored:
            return None
        at = scored.index(frame)
        verified = set(self.state.verified)
        side = scored[at + 1:] if step > 0 else scored[:at][::-1]
        return next((i for i in side if i not in verified), None)

    def next_unverified(self, after: int) -> int | None:
        """The next frame in time after `after` that is not verified (from the start again
        past the last frame); None when every frame is verified."""
        t = self.shape[0]
        verified = set(self.state.verified)
        return next(((after + k) % t for k in range(1, t + 1)
                     if (after + k) % t not in verified), None)

    def status(self, frame: int) -> str:
        """"verified", "edited" (painted, not verified), "propagated", "proposed" (the
        model's) or "-"."""
        return frame_status(self.state, frame)

    # -- persistence -----------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self.dirty_frames) or self.dirty_state or self.dirty_uncertainty

    def snapshot(self) -> dict:
        """Copies of what must be saved, safe to hand to a saving thread; clears the dirty
        marks (call :meth:`mark_dirty_again` if the save fails)."""
        labels = None if self.labels_layer is None else np.array(self.labels_layer.data,
                                                                   dtype=np.uint8)
        unc = None
        if self.dirty_uncertainty and self.uncertainty_layer is not None:
            unc = np.array(self.uncertainty_layer.data, dtype=np.float16)
        snap = {
            "folder": self.project_dir,
            "state": copy.deepcopy(self.state),
            "labels": labels,
            "uncertainty": unc,
            "changed": sorted(self.dirty_frames),
        }
        self.dirty_frames = set()
        self.dirty_state = self.dirty_uncertainty = False
        return snap

    def mark_dirty_again(self, snap: dict) -> None:
        self.dirty_frames |= set(snap["changed"])
        self.dirty_state = True
        self.dirty_uncertainty = self.dirty_uncertainty or snap["uncertainty"] is not None

    def restore(self) -> bool:
        """Load the project folder into the layers if one exists; True if it did.
        Raises ReadError (naming the file) for a broken project or another video's."""
        clean_project_folder(self.project_dir)  # temporary files of killed saves
        if not has_project(self.project_dir):
            return False
        state, labels, unc = load_project(self.project_dir, expected_shape=self.shape)
        self.state = state
        self.ensure_layers()
        if labels is not None:
            self.labels_layer.data = labels
        if unc is not None:
            self.uncertainty_layer.data = unc.astype(np.float32)
        if state.classes:
            classes, self.state.classes = state.classes, {}
            self.set_classes(classes)
        self.dirty_frames, self.dirty_state, self.dirty_uncertainty = set(), False, False
        logger.info("restored project %s", self.project_dir)
        return True

    def adopt_annotations(self) -> bool:
        """Start from the labels that came with the video (a DAVIS/MOSXAV sequence opened with
        its annotations): its annotated frames become verified. True if there were any."""
        for layer in self.viewer.layers:
            meta = layer.metadata or {}
            if (layer is self.image or (meta.get(OWNER_KEY)) or
                    layer.name != f"{self.name} labels" or layer.data.shape != self.shape):
                continue
            if not meta.get("labelled"):
                continue
            self.ensure_layers(meta.get("classes") or None)
            self.labels_layer.data = np.asarray(layer.data, dtype=np.uint8).copy()
            for frame in meta["labelled"]:
                self.set_verified(int(frame))
                self.state.set_source(int(frame), SOURCE_USER)
            self.dirty_frames |= set(self.state.verified)
            return True
        return False
