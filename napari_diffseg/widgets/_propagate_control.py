"""Propagate the verified frame on screen to its neighbours: the Review tab's panel and key.

The dock owns one :class:`PropagateController`; it builds a small panel (frames each way,
direction, *Propagate* and *Cancel*, a progress bar), binds **J** on the viewer (not one of
napari's keys, nor U/N/K/F1–F9 of the review loop) and runs
:func:`napari_diffseg.engine.propagate.iter_propagate` in a napari worker. Each proposal goes
into the layers through :meth:`AnnotationSession.apply_propagated`, which never writes a frame
the user verified or painted; those frames become "propagated" in the table and the state.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._signals import on_click

logger = logging.getLogger(__name__)

KEY_PROPAGATE = "J"


def propagate_job(frames, labels, source: int, *, options, model_labels, uncertainty,
                  num_classes: int, model_frames, keep, stop: threading.Event):
    """Worker body: yield the engine's PropagatedFrame items; a cancel ends it quietly.
    Arrays are those of a window of the video; see :meth:`PropagateController.start`."""
    from napari_diffseg.engine.propagate import PropagationCancelled, iter_propagate

    try:
        yield from iter_propagate(frames, labels, source, options=options,
                                  model_labels=model_labels, uncertainty=uncertainty,
                                  num_classes=num_classes, model_frames=model_frames,
                                  keep=keep, should_stop=stop.is_set)
    except PropagationCancelled:
        return


class PropagatePanel(QWidget):
    """Frames each way, direction, Propagate / Cancel, progress."""

    def __init__(self, parent=None) -> None:
        from napari_diffseg.engine.propagate import PropagateOptions

        super().__init__(parent)
        defaults = PropagateOptions()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.frames = QSpinBox()
        self.frames.setRange(1, 100)
        self.frames.setValue(defaults.frames)
        self.frames.setSuffix(" frames")
        self.frames.setToolTip("how many frames to propagate to on each side")
        self.direction = QComboBox()
        for text, value in (("both ways", "both"), ("forward", "forward"),
                            ("backward", "backward")):
            self.direction.addItem(text, value)
        self.button = QPushButton(f"Propagate ({KEY_PROPAGATE})")
        self.button.setToolTip(
            "carry this verified frame's labels to its neighbours along the video's motion, "
            "keeping the model's answer where it is confident; verified and painted frames "
            "are never changed")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        row.addWidget(self.button, 1)
        row.addWidget(self.frames)
        row.addWidget(self.direction)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setFormat("propagating: %v / %m frames")
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

    def options(self):
        from napari_diffseg.engine.propagate import PropagateOptions

        return PropagateOptions(frames=self.frames.value(),
                                direction=self.direction.currentData())

    def set_running(self, running: bool) -> None:
        self.button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.progress.setVisible(running)


class PropagateController:
    """Runs propagation for a :class:`DiffSegWidget` (its session, viewer and notifications)."""

    def __init__(self, dock) -> None:
        self.dock = dock
        self.panel = PropagatePanel()
        self.worker = None
        self._stop = threading.Event()
        self._written: list[int] = []
        self._offset = 0  # first frame of the window the worker got
        on_click(self.panel.button, self.start)
        on_click(self.panel.cancel_button, self.cancel)

    # -- keys --------------------------------------------------------------------------------
    def bind_keys(self) -> None:
        self.dock.viewer.bind_key(KEY_PROPAGATE, lambda viewer: self.start(), overwrite=True)

    def unbind_keys(self) -> None:
        try:
            self.dock.viewer.bind_key(KEY_PROPAGATE, None)
        except (KeyError, ValueError):
            pass

    # -- running -----------------------------------------------------------------------------
    def start(self, frame: int | None = None):
        """Propagate the verified frame `frame` (default: the one on screen); the worker."""
        from napari_diffseg.engine.propagate import propagation_plan

        dock, session = self.dock, self.dock.session
        if session is None or session.labels_layer is None:
            dock.notify_warning("open and segment (or paint) a video first")
            return None
        if self.worker is not None:
            return None
        frame = dock.current_frame() if frame is None else int(frame)
        state = session.state
        if frame not in state.verified:
            dock.notify_warning(f"frame {frame} is not verified: correct it and verify it "
                                "(K) before propagating it")
            return None
        options = self.panel.options()
        plan = propagation_plan(frame, session.shape[0], options)
        if not plan:
            dock.notify_info("no frame to propagate to")
            return None
        touched = {frame, *(t for t, _ in plan)}
        lo, hi = min(touched), max(touched) + 1  # only this window is copied to the worker
        protected = [i - lo for i in range(lo, hi) if session.protected(i)]
        model = [i - lo for i in state.segmented
                 if lo <= i < hi and i not in state.propagated and not session.protected(i)]
        labels = np.array(session.labels_layer.data[lo:hi], dtype=np.uint8)
        uncertainty = model_labels = None
        if model and session.uncertainty_layer is not None:
            uncertainty = np.array(session.uncertainty_layer.data[lo:hi], dtype=np.float32)
            model_labels = labels
        self._stop.clear()
        self._written = []
        self._offset = lo
        worker = create_worker(
            propagate_job, session.frames[lo:hi], labels, frame - lo, options=options,
            model_labels=model_labels, uncertainty=uncertainty,
            num_classes=max(len(state.classes), 2), model_frames=model, keep=protected,
            stop=self._stop, _start_thread=False,
            _connect={"yielded": self._on_item, "errored": self._on_error,
                      "finished": self._on_finished})
        self.worker = worker
        self.panel.progress.setRange(0, max(1, len(plan)))
        self.panel.progress.setValue(0)
        self.panel.status.setText(f"propagating frame {frame}…")
        self.panel.set_running(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        if self.worker is not None:
            self._stop.set()
            self.panel.status.setText("cancelling…")

    def _on_item(self, item) -> None:
        session = self.dock.session
        item.index = int(item.index) + self._offset
        self.panel.progress.setRange(0, max(1, item.total))
        self.panel.progress.setValue(item.done)
        if session is not None and session.apply_propagated(item,
                                                            shown=self.dock.current_frame()):
            self._written.append(item.index)

    def _on_error(self, exc: BaseException) -> None:
        self.dock.notify_error(f"propagation failed: {exc}")
        self.panel.status.setText(f"failed: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self.panel.set_running(False)
        written = sorted(self._written)
        cancelled = self._stop.is_set()
        text = (f"propagated to {len(written)} frame{'s' if len(written) != 1 else ''}"
                + (f" ({written[0]}–{written[-1]})" if written else "")
                + (", cancelled" if cancelled else "")
                + "; check them and verify the good ones")
        self.panel.status.setText(text)
        if written:
            self.dock.update_review()
            self.dock.schedule_save()
