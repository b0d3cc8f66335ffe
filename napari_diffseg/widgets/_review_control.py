"""The review loop's keys and what the canvas shows about the frame, wired up by the dock.

Keys (bound on the viewer; none is one of napari's own, see :mod:`._legend`):

==========  ===========================================================================
U           next uncertain: the most uncertain unverified frame; pressed again (or after
            verifying the frame it went to), the next one down the ranking
Shift+U     previous uncertain: the unverified frame just more uncertain than this one
N           next unverified frame in time (from the first frame again after the last)
K           verify the frame on screen, or unverify it
F1 … F9     paint with class 1 … 9 (the legend of the Review tab shows which is which)
==========  ===========================================================================

The canvas shows "frame 12 · verified" (or edited, proposed), the time slider is labelled
"frame", and napari plays the video at its own frame rate when the reader knows it.
"""

from __future__ import annotations

import logging

from ._legend import CLASS_KEYS
from ._review import KEY_NEXT, KEY_NEXT_UNVERIFIED, KEY_PREVIOUS, KEY_VERIFY
from ._session import frame_status

logger = logging.getLogger(__name__)

FRAME_AXIS_LABEL = "frame"


class ReviewController:
    """Navigation, class choice and the canvas's frame status for a :class:`DiffSegWidget`;
    holds no state of the project (that is the session's), only where a U-walk has got to."""

    def __init__(self, dock) -> None:
        self.dock = dock
        self._walked: int | None = None  # the frame the last U / Shift+U went to
        self._selected_layer = None

    @property
    def viewer(self):
        return self.dock.viewer

    @property
    def session(self):
        return self.dock.session

    # -- keys --------------------------------------------------------------------------------
    def key_bindings(self) -> dict:
        keys = {
            KEY_NEXT: lambda viewer: self.next_uncertain(),
            KEY_PREVIOUS: lambda viewer: self.previous_uncertain(),
            KEY_NEXT_UNVERIFIED: lambda viewer: self.next_unverified(),
            KEY_VERIFY: lambda viewer: self.dock.toggle_verified(),
        }
        for label, key in enumerate(CLASS_KEYS, start=1):
            keys[key] = lambda viewer, label=label: self.choose_class(label)
        return keys

    def bind_keys(self) -> None:
        for key, action in self.key_bindings().items():
            self.viewer.bind_key(key, action, overwrite=True)

    def unbind_keys(self) -> None:
        for key in self.key_bindings():
            try:
                self.viewer.bind_key(key, None)
            except (KeyError, ValueError):
                pass

    # -- navigation --------------------------------------------------------------------------
    def _go(self, frame: int | None, walking: bool = True) -> int | None:
        if frame is None:
            return None
        self.dock.go_to_frame(frame)
        self._walked = frame if walking else None
        return frame

    def next_uncertain(self) -> int | None:
        """U: from a frame a U-walk reached, the next unverified one down the ranking; from
        anywhere else, the most uncertain unverified frame (the second if on the first)."""
        session = self.session
        if session is None:
            return None
        current = self.dock.current_frame()
        frame = None
        if current == self._walked:
            frame = session.step_uncertain(current, +1)
        if frame is None:
            frame = session.next_uncertain(after=current)
        if frame is None:
            self.dock.notify_info("no unverified segmented frame left")
        return self._go(frame)

    def previous_uncertain(self) -> int | None:
        """Shift+U: the unverified frame ranked just above the one on screen."""
        session = self.session
        if session is None:
            return None
        frame = session.step_uncertain(self.dock.current_frame(), -1)
        if frame is None:
            self.dock.notify_info("no more uncertain unverified frame above this one")
        return self._go(frame)

    def next_unverified(self) -> int | None:
        """N: the next frame in time that is not verified."""
        session = self.session
        if session is None:
            return None
        frame = session.next_unverified(self.dock.current_frame())
        if frame is None:
            self.dock.notify_info("every frame is verified")
        return self._go(frame, walking=False)

    # -- classes -----------------------------------------------------------------------------
    def choose_class(self, label: int) -> None:
        """Paint with class `label`: the labels layer's selected label, made the active layer
        so that napari's paint tools act on it."""
        session = self.session
        layer = None if session is None else session.labels_layer
        if layer is None or label not in (session.state.classes or {}):
            return
        layer.selected_label = int(label)
        self.viewer.layers.selection.active = layer
        self.dock.review.legend.set_selected(int(label))

    def watch_labels(self, layer) -> None:
        """Keep the legend on the label the layer paints with, however it is chosen."""
        if layer is self._selected_layer:
            return
        if self._selected_layer is not None:
            try:
                self._selected_layer.events.selected_label.disconnect(self._label_changed)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._selected_layer = layer
        if layer is not None:
            layer.events.selected_label.connect(self._label_changed)
            self._label_changed()

    def _label_changed(self, event=None) -> None:
        layer = self._selected_layer
        if layer is not None:
            self.dock.review.legend.set_selected(int(layer.selected_label))

    def refresh_legend(self) -> None:
        session = self.session
        if session is None:
            return
        layer = session.labels_layer
        colors = {}
        if layer is not None:
            for label in session.state.classes:
                if label:
                    colors[label] = layer.get_color(label)
        self.dock.review.legend.set_classes(session.state.classes, colors)
        self.watch_labels(layer)

    # -- the canvas --------------------------------------------------------------------------
    def frame_text(self, frame: int) -> str:
        session = self.session
        name = session.state.frame_names[frame] if frame < len(session.state.frame_names) \
            else f"{frame:05d}"
        shown = f"frame {frame}" + ("" if name == f"{frame:05d}" else f" ({name})")
        return f"{shown} · {frame_status(session.state, frame)}"

    def show_frame_status(self) -> None:
        """Write the frame's status on the canvas (top left) and label the time slider."""
        overlay = self.viewer.canvas.overlays.text
        if self.session is None:
            overlay.visible = False
            return
        overlay.text = self.frame_text(self.dock.current_frame())
        overlay.position = "top_left"
        overlay.visible = True
        labels = list(self.viewer.dims.axis_labels)
        if len(labels) >= 3 and labels[0] != FRAME_AXIS_LABEL:
            labels[0] = FRAME_AXIS_LABEL
            self.viewer.dims.axis_labels = tuple(labels)

    def apply_frame_rate(self) -> bool:
        """Play at the video's frame rate (the reader's metadata "fps") on napari's time
        slider; True if set. napari has no public setter: this finds its slider widget, and
        leaves the user's playback preference (a global setting) alone."""
        session = self.session
        fps = (session.image.metadata or {}).get("fps") if session is not None else None
        if not fps:
            return False
        try:
            from napari._qt.widgets.qt_dims_slider import QtDimSliderWidget
        except ImportError:  # napari moved it: the default speed is no harm
            return False
        sliders = [w for w in self.dock.window().findChildren(QtDimSliderWidget)
                   if getattr(w, "axis", None) == 0]
        for slider in sliders:
            slider.fps = max(1, round(float(fps)))
        return bool(sliders)
