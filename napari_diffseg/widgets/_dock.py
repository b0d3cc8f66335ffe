"""The napari-diffseg dock: open → segment → review/correct/verify → fine-tune → re-segment.

Thin by design: every long computation is one engine/io call in a napari ``thread_worker``
(see :mod:`._jobs`), the shared state lives in an :class:`AnnotationSession`, and this module
only turns user actions and worker results into layer updates and notifications.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_diffseg.engine.defaults import worse_than_before
from napari_diffseg.io import ReadError

from . import _jobs, _videos
from ._finetune_panel import FinetunePanel
from ._history_control import ModelHistoryController
from ._propagate_control import PropagateController
from ._review import KEY_NEXT, KEY_VERIFY, ReviewPanel
from ._review_control import ReviewController
from ._samples_view import SamplesView
from ._session import OWNER_KEY, AnnotationSession, watch_undo_redo
from ._signals import on_click
from ._uncertainty_choice import UncertaintyChoice

logger = logging.getLogger(__name__)

BUNDLED = "bundled"
AUTOSAVE_DELAY_MS = 2000
#: results arriving faster than this are shown together: one table, progress bar and status
#: update on the Qt thread per interval, however many frames the worker sends
SEGMENT_UI_INTERVAL_MS = 250
__all__ = ["KEY_NEXT", "KEY_VERIFY", "DiffSegWidget"]

#: what the autosave indicator says
SAVED, SAVING, UNSAVED, NOT_SAVED = "saved", "saving…", "unsaved changes", "not saved"


def _bundled_model_path() -> Path:
    from napari_diffseg.models import default_model_path

    return default_model_path()


def _describe_error(exc: BaseException) -> str:
    """A message that says what went wrong and what to do."""
    name = type(exc).__name__
    text = str(exc) or name
    if "OutOfMemory" in name or "out of memory" in text.lower():
        return ("GPU out of memory: lower the samples per frame or segment on the CPU "
                f"({text.splitlines()[0]})")
    return text


class _CloseWatcher(QObject):
    """Saves the project when napari's main window is about to close."""

    def __init__(self, dock: DiffSegWidget) -> None:
        super().__init__(dock)
        self.dock = dock

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Close:
            self.dock.save_now(force=True)
        return False


class DiffSegWidget(QWidget):
    """Dock widget: Segment | Review | Fine-tune | Export, for one video at a time."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AnnotationSession | None = None
        self.segment_worker = None
        self.finetune_worker = None
        self.save_worker = None
        self._save_again = False
        self._stop = threading.Event()
        self._control: _jobs.FinetuneControl | None = None
        self._seg_started = 0.0
        self._device_text = "?"
        self.last_checkpoint: str | None = None
        self._resegmenting = False  # the running segmentation came from the Fine-tune tab
        self._fitted = False  # the view is refitted once the dock is shown
        self._calibrated = None  # the running segmentation's calibration (_jobs.Calibrated)
        # frames the whole-video step wrote: (wire kept under the contrast, wire dropped,
        # static vessel removed)
        self._video_step_frames: tuple[list[int], ...] = ([], [], [])
        self.reviewing = ReviewController(self)
        self.propagating = PropagateController(self)
        self.history = ModelHistoryController(self)
        self._build_ui()
        self._autosave = QTimer(self)
        self._autosave.setSingleShot(True)
        self._autosave.setInterval(AUTOSAVE_DELAY_MS)
        self._autosave.timeout.connect(self.save_async)
        self._last_chunk = None
        self._segment_ui = QTimer(self)
        self._segment_ui.setSingleShot(True)
        self._segment_ui.setInterval(SEGMENT_UI_INTERVAL_MS)
        self._segment_ui.timeout.connect(self._show_segment_progress)
        self._close_watcher = _CloseWatcher(self)
        self._watched_window = None
        self._connected_labels: list = []
        self._new_video = None
        self._videos_before: list = []
        self.viewer.layers.events.inserted.connect(self._layer_inserted)
        self.viewer.layers.events.removed.connect(self._layer_removed)
        self.viewer.dims.events.current_step.connect(self._frame_changed)
        self.reviewing.bind_keys()
        self.propagating.bind_keys()
        self._refresh_layer_choices()

    # -- UI ----------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        top = QFormLayout()
        row = QHBoxLayout()
        self.video_combo = QComboBox()
        self.video_combo.setToolTip("the video (image layer) to work on")
        self.video_combo.currentIndexChanged.connect(self._video_chosen)
        open_button = QPushButton("Open…")
        open_button.setToolTip("open a video, DICOM cine, TIFF stack or frame folder")
        on_click(open_button, self._open_dialog)
        row.addWidget(self.video_combo, 1)
        row.addWidget(open_button)
        top.addRow("Video", row)
        self.project_label = QLabel("")
        self.project_label.setWordWrap(True)
        top.addRow("Project", self.project_label)
        self.save_label = QLabel("")
        self.save_label.setToolTip("the project is saved automatically two seconds after each "
                                   "change and when napari closes")
        top.addRow("Autosave", self.save_label)
        layout.addLayout(top)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_segment_tab(), "Segment")
        self.review = ReviewPanel()
        self.review.frame_clicked.connect(self.go_to_frame)
        on_click(self.review.next_button, self.next_uncertain)
        on_click(self.review.previous_button, self.reviewing.previous_uncertain)
        on_click(self.review.next_unverified_button, self.reviewing.next_unverified)
        self.review.legend.class_chosen.connect(self.reviewing.choose_class)
        on_click(self.review.verify_button, self.toggle_verified)
        self.review.show_uncertainty.toggled.connect(self._toggle_uncertainty)
        self.review.contours.toggled.connect(self._toggle_contours)
        self.review.layout().addWidget(self.propagating.panel)
        self.samples_view = SamplesView(self, self.review.show_samples)
        self.tabs.addTab(self.review, "Review")
        self.finetune = FinetunePanel()
        on_click(self.finetune.start_button, self.start_finetune)
        on_click(self.finetune.adapt_button, self.start_adapt)
        self.finetune.pause_button.toggled.connect(self._pause_finetune)
        on_click(self.finetune.stop_button, self.stop_finetune)
        on_click(self.finetune.resegment_button, self.resegment_with_new_model)
        on_click(self.finetune.reseg_cancel_button, self.cancel_segmentation)
        self.finetune.layout().addWidget(self.history.panel)
        self.tabs.addTab(self.finetune, "Fine-tune")
        self.tabs.addTab(self._build_export_tab(), "Export")
        layout.addWidget(self.tabs)

    def _build_segment_tab(self) -> QWidget:
        tab = QWidget()
        form = QFormLayout(tab)
        model_row = QHBoxLayout()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("bundled default model")
        self.model_edit.setToolTip("checkpoint file (.pt); empty: the bundled default model")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        on_click(browse, self._browse_model)
        model_row.addWidget(self.model_edit)
        model_row.addWidget(browse)
        form.addRow("Model", model_row)
        self.device_combo = QComboBox()
        self._fill_devices()
        form.addRow("Device", self.device_combo)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 10)
        self.steps_spin.setValue(4)
        self.steps_spin.setToolTip("DDIM sampling steps per sample")
        form.addRow("Steps", self.steps_spin)
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, 16)
        self.samples_spin.setValue(4)
        self.samples_spin.setToolTip("stochastic samples per frame: their disagreement is the "
                                     "uncertainty (1 sample: entropy only)")
        form.addRow("Samples", self.samples_spin)
        self.uncertainty_choice = UncertaintyChoice()
        form.addRow("Uncertainty", self.uncertainty_choice)
        self.range_combo = QComboBox()
        self.range_combo.addItem("all frames", "all")
        self.range_combo.addItem("current frame", "current")
        self.range_combo.addItem("frames not verified", "unverified")
        form.addRow("Frames", self.range_combo)
        self.static_check = QCheckBox("drop vessel the frames before the contrast show")
        self.static_check.setChecked(True)
        self.static_check.setToolTip(
            "after a segmentation, vessel labels over structures that the video's frames "
            "without contrast show just as dark (lung markings, clips, wires, a catheter) "
            "become background; your verified and painted frames are never changed. Turn it "
            "off for a video whose first frames already hold contrast")
        form.addRow("Clean-up", self.static_check)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Segment")
        on_click(self.run_button, self.start_segmentation)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        on_click(self.cancel_button, self.cancel_segmentation)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        form.addRow(buttons)
        self.seg_progress = QProgressBar()
        self.seg_progress.setFormat("%v / %m frames")
        form.addRow(self.seg_progress)
        self.seg_status = QLabel("")
        self.seg_status.setWordWrap(True)
        form.addRow(self.seg_status)
        return tab

    def _build_export_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        info = QLabel("Verified frames are exported as annotations; TIFF holds all frames.")
        info.setWordWrap(True)
        layout.addWidget(info)
        for text, slot in (("DAVIS folder…", self._export_davis_dialog),
                           ("MOSXAV folder…", self._export_mosxav_dialog),
                           ("Multi-page TIFF…", self._export_tiff_dialog)):
            button = QPushButton(f"Export {text}")
            on_click(button, slot)
            layout.addWidget(button)
        layout.addStretch(1)
        return tab

    def _fill_devices(self) -> None:
        """"auto" at once; the device list when a worker has imported torch (seconds)."""
        self.device_combo.addItem("auto", "auto")

        def fill(found) -> None:
            auto, names = found
            try:
                self.device_combo.setItemText(0, f"auto: {auto}")
                for name in names:
                    self.device_combo.addItem(name, name)
                if not auto.startswith("cuda"):
                    self.device_combo.setToolTip(
                        "no CUDA GPU found: segmentation runs on the CPU")
            except RuntimeError:  # the dock was closed meanwhile
                pass

        def failed(exc) -> None:
            logger.warning("could not list the torch devices: %s", exc)

        worker = create_worker(_jobs.devices_job, _start_thread=False,
                               _connect={"returned": fill, "errored": failed})
        self._devices_worker = worker
        worker.start()

    # -- video / session ---------------------------------------------------------------------
    def _video_layers(self):
        return [layer for layer in self.viewer.layers
                if layer._type_string == "image" and not (layer.metadata or {}).get(OWNER_KEY)]

    def _refresh_layer_choices(self, event=None) -> None:
        current = self.video_combo.currentText()
        names = [layer.name for layer in self._video_layers()]
        self.video_combo.blockSignals(True)
        self.video_combo.clear()
        self.video_combo.addItems(names)
        if current in names:
            self.video_combo.setCurrentText(current)
        self.video_combo.blockSignals(False)
        if self.session is None and names or (names and current not in names):
            self._video_chosen()

    def _layer_inserted(self, event) -> None:
        """A video the user opens while the dock works on another becomes the dock's video
        once the opening is over (a dataset adds its other sequences hidden, after it)."""
        self._refresh_layer_choices()
        layer = event.value
        if (self.session is None or _videos.same_layer(layer, self.session.image)
                or not layer.visible
                or not _videos.is_video(layer) or self._new_video is not None):
            return
        self._new_video = layer
        self._videos_before = [v for v in self._video_layers()
                               if not _videos.same_layer(v, layer)]
        QTimer.singleShot(0, self._follow_new_video)

    def _follow_new_video(self) -> None:
        """Switch to the video just opened (saving the previous project), close the videos
        opened before it and fit the view to it: see :mod:`._videos`."""
        layer, others = self._new_video, self._videos_before
        self._new_video, self._videos_before = None, []
        if layer is None or layer not in self.viewer.layers:
            return
        self.video_combo.setCurrentText(layer.name)  # -> _video_chosen
        if self.session is None or not _videos.same_layer(self.session.image, layer):
            return
        _videos.close_other_videos(self.viewer, layer, others)

    def _layer_removed(self, event) -> None:
        layer = event.value
        if self.session is not None and _videos.same_layer(layer, self.session.image):
            self.save_now(force=True)
            self.session = None
        if any(_videos.same_layer(known, layer) for known in self._connected_labels):
            layer.events.paint.disconnect(self._on_paint)
            self._connected_labels = [k for k in self._connected_labels
                                      if not _videos.same_layer(k, layer)]
        self._refresh_layer_choices()

    def _video_chosen(self, *_args) -> None:
        name = self.video_combo.currentText()
        if not name or name not in self.viewer.layers:
            return
        layer = self.viewer.layers[name]
        if self.session is not None and _videos.same_layer(self.session.image, layer):
            return
        if self.session is not None:
            self.save_now(force=True)
        try:
            self.session = AnnotationSession(self.viewer, layer)
        except ValueError as exc:
            show_warning(str(exc))
            self.session = None
            return
        try:
            restored = self.session.restore()
        except (OSError, ValueError) as exc:
            show_error(f"{exc}. The project was not loaded; new work is saved in "
                       f"{self.session.project_dir}")
            restored = False
        if restored:
            show_info(f"restored {len(self.session.state.verified)} verified frames from "
                      f"{self.session.project_dir}")
            self._connect_labels()
        elif self.session.adopt_annotations():
            self._connect_labels()
            self.schedule_save()
        else:
            # the layers exist from the start: the user can paint before segmenting, and
            # Segment never stalls the window creating layers
            self.session.ensure_layers(self._expected_classes(), expected=True)
            self._connect_labels()
        self.project_label.setText(str(self.session.project_dir))
        self._show_save_state(UNSAVED if self.session.dirty else SAVED)
        QTimer.singleShot(0, self.reviewing.apply_frame_rate)  # once napari has the slider
        self.history.open_project()
        self.update_review()

    def _connect_labels(self) -> None:
        layer = self.session.labels_layer
        if layer is None or any(_videos.same_layer(known, layer)
                                for known in self._connected_labels):
            return
        layer.events.paint.connect(self._on_paint)
        watch_undo_redo(layer, self._on_undo_redo)  # napari's undo/redo emit no paint event
        self._connected_labels.append(layer)

    def _watch_window(self) -> None:
        """Once docked, our top-level window is napari's: save when it closes."""
        window = self.window()
        if window is not self and id(window) != self._watched_window:
            window.installEventFilter(self._close_watcher)
            self._watched_window = id(window)  # an id: holding napari's window would leak it

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self._watch_window()
        QTimer.singleShot(0, self.reviewing.apply_frame_rate)  # once docked in napari's window
        if not self._fitted:
            # docking narrows the canvas: fit the video to what is left, once
            self._fitted = True
            QTimer.singleShot(0, self._fit_view)
        super().showEvent(event)

    def _fit_view(self) -> None:
        try:
            self.viewer.reset_view()
        except RuntimeError:  # the window closed meanwhile
            pass

    def _open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open angiography video")
        if path:
            self.open_video(path)

    def open_video(self, path: str | Path) -> None:
        """Open a file with our reader; errors become a notification that says the problem
        first, then the file's name: the same text File ▸ Open shows."""
        try:
            self.viewer.open(str(path), plugin="napari-diffseg")
        except ReadError as exc:  # the reader's own message, already short
            show_error(str(exc))
        except Exception as exc:  # napari's: no reader, or ReaderPluginError around ours
            original = getattr(exc, "original_error", None) or exc
            show_error(f"Could not open {Path(path).name}: {original}")

    # -- segmentation ------------------------------------------------------------------------
    def model_path(self) -> str:
        text = self.model_edit.text().strip()
        return text if text else str(_bundled_model_path())

    def _expected_classes(self) -> dict[int, str]:
        """The classes the chosen model will label, when known without loading it (the
        bundled model's), so that the layers are made with them: the legend shows them before
        the first segmentation, and its results need no new colormap (a shader rebuild that
        froze the window for 200-500 ms mid-segmentation)."""
        if self.model_edit.text().strip():
            return {}
        from napari_diffseg.models import BUNDLED_CLASSES

        return dict(BUNDLED_CLASSES)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "", "Checkpoints (*.pt)")
        if path:
            self.model_edit.setText(path)

    def current_frame(self) -> int:
        return int(self.viewer.dims.current_step[0]) if self.viewer.dims.ndim >= 3 else 0

    def frames_to_segment(self, which: str | None = None) -> list[int]:
        which = which or self.range_combo.currentData()
        t = self.session.shape[0]
        if which == "current":
            return [min(self.current_frame(), t - 1)]
        if which == "unverified":
            return [i for i in range(t) if not self.session.protected(i)]
        return list(range(t))

    def start_segmentation(self, which: str | None = None, model_path: str | None = None):
        """Run the model on the chosen frames in a background worker; returns the worker."""
        if self.session is None:
            show_warning("open a video first (File ▸ Open or the Open… button)")
            return None
        if self.segment_worker is not None:
            show_warning("a segmentation is already running")
            return None
        indices = self.frames_to_segment(which)
        if not indices:
            show_info("every frame is verified or corrected: nothing to segment")
            return None
        try:
            path = model_path or self.model_path()
        except FileNotFoundError as exc:
            show_error(str(exc))
            return None
        device = self.device_combo.currentData()
        self._stop.clear()
        calibrate = None
        if self.session.labels_layer is not None and self.session.state.verified:
            verified = sorted(self.session.state.verified)  # the engine picks up to 4
            calibrate = (verified, np.array(self.session.labels_layer.data[verified],
                                            dtype=np.uint8))
        user_labels = None
        if self.session.labels_layer is not None:
            mine = [i for i in range(len(self.session.frames)) if self.session.protected(i)]
            if mine:  # the wire tracking's evidence (a copy: the user may paint meanwhile)
                user_labels = (mine, np.array(self.session.labels_layer.data[mine],
                                              dtype=np.uint8))
        worker = create_worker(
            _jobs.segment_job, path, self.session.frames, indices,
            device=device, steps=self.steps_spin.value(), samples=self.samples_spin.value(),
            review=self.uncertainty_choice.mode(), calibrate=calibrate,
            user_labels=user_labels, static=self.static_check.isChecked(), stop=self._stop,
            _start_thread=False,
            _connect={"yielded": self._on_segment_item, "errored": self._on_segment_error,
                      "finished": self._on_segment_finished},
        )
        self.segment_worker = worker
        self._calibrated = None
        self._video_step_frames = ([], [], [])
        self._seg_started = time.perf_counter()
        self.seg_progress.setRange(0, len(indices))
        self.seg_progress.setValue(0)
        self.seg_status.setText(f"loading {Path(path).name}…")
        self._set_segmenting(True)
        worker.start()
        return worker

    def cancel_segmentation(self) -> None:
        if self.segment_worker is not None:
            self._stop.set()
            self.segment_worker.quit()
            self.seg_status.setText("cancelling…")

    def _set_segmenting(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.finetune.resegment_button.setEnabled(not running and bool(self.last_checkpoint))
        self.finetune.show_resegmenting(running and self._resegmenting)

    def _on_segment_item(self, item) -> None:
        session = self.session
        if session is None:
            return
        if isinstance(item, _jobs.ModelLoaded):
            if session.state.classes and set(session.state.classes) - set(item.classes) and \
                    session.state.verified:
                show_warning(
                    f"{Path(item.path).name} predicts classes {item.classes}, but this project "
                    f"uses {session.state.classes}; verified frames are kept as they are"
                )
            merged = {**item.classes, **session.state.classes} if session.state.verified \
                else dict(item.classes)
            session.ensure_layers(merged)
            session.state.model = item.path
            self._connect_labels()
            self.seg_status.setText(f"segmenting on {item.device}…")
            self._device_text = item.device
            return
        if isinstance(item, _jobs.Calibrated):
            self._calibrated = item
            session.state.settings["temperature"] = item.temperature
            self.seg_status.setText(
                f"calibrated on verified frame{'s' if len(item.frames) > 1 else ''} "
                f"{', '.join(map(str, item.frames))}: temperature {item.temperature:.2f}; "
                f"segmenting on {self._device_text}…")
            return
        if isinstance(item, _jobs.WireTracked):
            written = set(session.apply_wire_tracking(item, shown=self.current_frame()))
            self._video_step_frames = tuple([f for f in frames if f in written]
                                            for frames in (item.gained, item.dropped,
                                                           item.static))
            return
        session.apply_chunk(item, shown=self.current_frame())
        self._last_chunk = item
        if not self._segment_ui.isActive():
            self._segment_ui.start()

    def _show_segment_progress(self) -> None:
        """Progress, status, table and autosave for the chunks received since the last call
        (see SEGMENT_UI_INTERVAL_MS)."""
        item, self._last_chunk = self._last_chunk, None
        self._segment_ui.stop()
        if item is None or self.session is None:
            return
        self.seg_progress.setValue(item.done)
        self.finetune.reseg_progress.setRange(0, item.total)
        self.finetune.reseg_progress.setValue(item.done)
        elapsed = time.perf_counter() - self._seg_started
        rate = item.elapsed_s / max(item.done, 1)
        left = rate * (item.total - item.done)
        self.seg_status.setText(
            f"{item.done}/{item.total} frames on {self._device_text}, "
            f"{elapsed:.0f} s elapsed, about {left:.0f} s left"
        )
        self.update_review()
        self.schedule_save()

    def _on_segment_error(self, exc: BaseException) -> None:
        from napari_diffseg.engine.inference import Cancelled

        if isinstance(exc, Cancelled):
            return
        show_error(f"segmentation failed: {_describe_error(exc)}")
        self.seg_status.setText(f"failed: {_describe_error(exc)}")

    def _on_segment_finished(self) -> None:
        self._show_segment_progress()
        done = self.seg_progress.value()
        total = self.seg_progress.maximum()
        if self._stop.is_set():
            self.seg_status.setText(f"cancelled after {done}/{total} frames")
        elif done == total:
            calibrated = ""
            if self._calibrated is not None:
                n = len(self._calibrated.frames)
                calibrated = (f"; uncertainty calibrated on {n} verified frame"
                              f"{'s' if n > 1 else ''} (temperature "
                              f"{self._calibrated.temperature:.2f})")
            wire = ""
            kept, dropped, static = (len(f) for f in self._video_step_frames)
            if static:
                wire += (f"; vessel labels over what the frames before the contrast show as "
                         f"well removed in {static} frame{'s' * (static > 1)}")
            if kept:
                wire += f"; guidewire kept under the contrast in {kept} frame{'s' * (kept > 1)}"
            if dropped:
                wire += (f"; a guidewire never seen outside the vessel dropped in {dropped} "
                         f"frame{'s' * (dropped > 1)}")
            self.seg_status.setText(
                f"done: {total} frames in {time.perf_counter() - self._seg_started:.1f} s"
                + calibrated + wire)
        self.segment_worker = None
        self._resegmenting = False
        self._set_segmenting(False)
        if self.session is not None and self.session.dirty:
            self.schedule_save()

    # -- review ------------------------------------------------------------------------------
    def update_review(self) -> None:
        if self.session is not None:
            self.review.update_from(self.session.state, self.current_frame())
            self.reviewing.refresh_legend()
        self.reviewing.show_frame_status()

    def notify_info(self, message: str) -> None:
        show_info(message)

    def notify_warning(self, message: str) -> None:
        show_warning(message)

    def notify_error(self, message: str) -> None:
        show_error(message)

    def go_to_frame(self, frame: int) -> None:
        step = list(self.viewer.dims.current_step)
        if step:
            step[0] = int(frame)
            self.viewer.dims.current_step = tuple(step)

    def next_uncertain(self) -> int | None:
        """U: see :class:`ReviewController` (previous_uncertain, next_unverified too)."""
        return self.reviewing.next_uncertain()

    def toggle_verified(self, frame: int | None = None) -> bool | None:
        """Mark the frame (default: current) verified, or unverify it; returns the new flag."""
        if self.session is None or self.session.labels_layer is None:
            show_warning("segment (or paint) the video before verifying frames")
            return None
        frame = self.current_frame() if frame is None else int(frame)
        verified = frame not in self.session.state.verified
        self.session.set_verified(frame, verified)
        self.update_review()
        self.schedule_save()
        return verified

    def _on_paint(self, event) -> None:
        if self.session is not None and self.session.on_paint(event.value):
            self.update_review()
            self.schedule_save()

    def _on_undo_redo(self, layer, atoms, undoing: bool) -> None:
        if self.session is not None and self.session.on_undo_redo(layer, atoms, undoing):
            self.update_review()
            self.schedule_save()

    def _frame_changed(self, event=None) -> None:
        if self.session is not None:
            self.review.select_frame(self.current_frame())
            self.reviewing.show_frame_status()

    def _toggle_uncertainty(self, visible: bool) -> None:
        if self.session is not None and self.session.uncertainty_layer is not None:
            self.session.uncertainty_layer.visible = visible

    def _toggle_contours(self, on: bool) -> None:
        if self.session is not None and self.session.labels_layer is not None:
            self.session.labels_layer.contour = 2 if on else 0

    # -- saving ------------------------------------------------------------------------------
    def _show_save_state(self, text: str) -> None:
        self.save_label.setText(text)

    def schedule_save(self) -> None:
        self._watch_window()
        self._show_save_state(UNSAVED)
        self._autosave.start()

    def save_async(self):
        """Save in a background worker (copies are taken here, in the Qt thread)."""
        if self.session is None or not self.session.dirty:
            return None
        if self.save_worker is not None:
            self._save_again = True
            return None
        snapshot = self.session.snapshot()
        session = self.session
        self._show_save_state(SAVING)

        def failed(exc):
            session.mark_dirty_again(snapshot)
            self._show_save_state(f"{NOT_SAVED}: {exc}")
            show_error(f"autosave failed: {exc}; your labels are still in the viewer, "
                       "export them or fix the folder")

        def finished():
            self.save_worker = None
            if self._save_again:
                self._save_again = False
                self.save_async()
            elif session is self.session and not self.save_label.text().startswith(NOT_SAVED):
                pending = session.dirty or self._autosave.isActive()
                self._show_save_state(UNSAVED if pending else SAVED)

        worker = create_worker(_jobs.save_job, snapshot, _start_thread=False,
                               _connect={"errored": failed, "finished": finished})
        self.save_worker = worker
        worker.start()
        return worker

    def save_now(self, force: bool = False) -> bool:
        """Save synchronously (on close, before switching video); True if saved. `force`
        writes the labels even without a recorded edit: napari's undo/redo change them
        without an event."""
        if self.session is None:
            return False
        if force and self.session.labels_layer is not None:
            self.session.dirty_state = True
        if not self.session.dirty:
            return False
        snapshot = self.session.snapshot()
        try:
            _jobs.save_job(snapshot)
        except (OSError, ValueError) as exc:
            self.session.mark_dirty_again(snapshot)
            self._show_save_state(f"{NOT_SAVED}: {exc}")
            show_error(f"could not save the project: {exc}")
            return False
        self._show_save_state(SAVED)
        return True

    # -- fine-tuning -------------------------------------------------------------------------
    def start_finetune(self):
        """Fine-tune in a child process on the verified frames; returns the worker."""
        session = self.session
        if session is None or session.labels_layer is None:
            show_warning("open and segment a video first")
            return None
        if not session.state.verified:
            show_error("no verified frames to train on: correct a frame and mark it "
                       f"verified ({KEY_VERIFY} or the Verify button) first, or use "
                       "'Adapt to this video', which needs none")
            return None
        if self.finetune_worker is not None:
            return None
        self.save_now()
        output = self._checkpoint_output()
        if output is None:
            return None
        try:
            init = self.model_path()
        except FileNotFoundError:
            init = None
        control = _jobs.FinetuneControl()
        self._control = control
        options = self.finetune.options()
        worker = create_worker(
            _jobs.finetune_job, session.frames,
            np.array(session.labels_layer.data, dtype=np.uint8), list(session.state.verified),
            classes=dict(session.state.classes), init=init, output=output, options=options,
            val_fraction=self.finetune.val_fraction.value(),
            extra_videos=self.finetune.extra_videos(), control=control,
            refit=self.finetune.refit.isChecked(), _start_thread=False,
            _connect={"yielded": self._on_finetune_event, "errored": self._on_finetune_error,
                      "finished": self._on_finetune_finished},
        )
        self.finetune_worker = worker
        self.finetune.plot.clear(options["iterations"])
        self.finetune.progress.setRange(0, options["iterations"])
        self.finetune.progress.setValue(0)
        self.finetune.status.setText("preparing the training data…")
        self.finetune.val_frames.setText("")
        self.finetune.set_running(True)
        self._finetune_output = str(output)
        self.history.started("finetune", init, output, session.state.verified, options,
                             self.finetune.val_fraction.value())
        worker.start()
        return worker

    def _checkpoint_output(self) -> Path | None:
        """The Fine-tune tab's checkpoint path (default <project>/models/finetuned.pt), its
        folder created; None (and an error notification) if it cannot be written."""
        output = Path(self.finetune.output.text() or self.history.next_output())
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            show_error(f"cannot write the checkpoint to {output}: {exc}")
            return None
        return output

    def start_adapt(self):
        """Adapt the model to this video in the fine-tuning child process, from the verified
        frames if there are any, else from the model's and the prior's pseudo-labels alone;
        returns the worker."""
        session = self.session
        if session is None:
            show_warning("open a video first (File ▸ Open or the Open… button)")
            return None
        if self.finetune_worker is not None:
            return None
        self.save_now()
        output = self._checkpoint_output()
        if output is None:
            return None
        try:
            init = self.model_path()
        except FileNotFoundError as exc:
            show_error(f"cannot adapt: {exc}")
            return None
        verified = {}
        if session.labels_layer is not None:
            data = session.labels_layer.data
            verified = {int(i): np.array(data[i], dtype=np.uint8) for i in session.state.verified}
        control = _jobs.FinetuneControl()
        self._control = control
        iterations = self.finetune.iterations.value()
        worker = create_worker(
            _jobs.adapt_job, session.frames, verified, init=init, output=output,
            iterations=iterations, control=control, _start_thread=False,
            context_frames=self.finetune.context_frames.value(),
            anchor_frames=self.finetune.anchor_frames.value(),
            _connect={"yielded": self._on_finetune_event, "errored": self._on_finetune_error,
                      "finished": self._on_finetune_finished},
        )
        self.finetune_worker = worker
        self.finetune.plot.clear(iterations)
        self.finetune.show_stage(0, iterations, "iterations")
        self.finetune.status.setText("adapting: making pseudo-labels…")
        self.finetune.set_running(True)
        self._finetune_output = str(output)
        self.history.started("adapt", init, output, session.state.verified,
                             {"iterations": iterations,
                              "context_frames": self.finetune.context_frames.value(),
                              "anchor_frames": self.finetune.anchor_frames.value()})
        worker.start()
        return worker

    def _pause_finetune(self, paused: bool) -> None:
        if self._control is not None:
            self._control.pause(paused)
            self.finetune.status.setText("paused" if paused else "training…")

    def stop_finetune(self) -> None:
        if self._control is not None:
            self._control.stop()
            self.finetune.status.setText("stopping (the best checkpoint is kept)…")

    def _on_finetune_event(self, event: dict) -> None:
        if self._control is not None:
            self._control.events.append(event)
        self.finetune.show_event(event)  # status, progress, curves, held-out frames
        kind = event.get("kind")
        if kind == "done" and event.get("path") is not None:
            how = "stopped" if event.get("stopped") else "finished"
            best, before = event.get("best_val_dice"), event.get("val_dice_before")
            worse = worse_than_before(best, before)
            if worse:
                # a worse model must not replace the one the user has: say so, keep both
                show_warning(f"fine-tuning {how}, but the new model scores lower on the "
                             f"held-out frames than the one it started from (Dice {best:.3f} "
                             f"< {before:.3f}): the current model is kept; the new one is in "
                             "the list below if you want it anyway")
                self.finetune.status.setText(
                    f"{how}: not better than before (best validation Dice {best:.3f}, "
                    f"{before:.3f} before training); current model kept, the new one is "
                    "listed")
            else:
                self.last_checkpoint = event["path"]
                show_info(f"fine-tuning {how}; the new model is {event['path']}")
            self.history.finished(event, use=not worse)
        elif kind == "error":
            show_error(f"fine-tuning failed: {event['message']}")

    def _on_finetune_error(self, exc: BaseException) -> None:
        show_error(f"fine-tuning failed: {_describe_error(exc)}")
        self.finetune.status.setText(f"failed: {_describe_error(exc)}")

    def _on_finetune_finished(self) -> None:
        self.finetune_worker = None
        self.finetune.set_running(False)
        self.finetune.resegment_button.setEnabled(
            bool(self.last_checkpoint) and self.segment_worker is None)

    def resegment_with_new_model(self):
        """Segment the unverified, uncorrected frames with the last fine-tuned model."""
        if not self.last_checkpoint:
            show_warning("fine-tune first")
            return None
        self.model_edit.setText(self.last_checkpoint)
        self._resegmenting = True
        self.finetune.reseg_progress.setValue(0)
        worker = self.start_segmentation("unverified", self.last_checkpoint)
        if worker is None:
            self._resegmenting = False
        else:
            self.finetune.reseg_progress.setRange(0, self.seg_progress.maximum())
        return worker

    # -- export ------------------------------------------------------------------------------
    def _export_args(self):
        s = self.session
        if s is None or s.labels_layer is None:
            raise ValueError("nothing to export: segment or paint the video first")
        return s, np.asarray(s.labels_layer.data, dtype=np.uint8)

    def export(self, kind: str, path: str | Path) -> Path | None:
        """kind: "davis" | "mosxav" (verified frames) | "tiff" (all frames)."""
        from napari_diffseg.io import write_davis, write_mosxav, write_tiff
        from napari_diffseg.io.model_history import provenance

        try:
            s, labels = self._export_args()
            if kind == "tiff":
                out = write_tiff(path, labels, provenance=provenance(s.state, s.project_dir))
            else:
                if not s.state.verified:
                    raise ValueError("no verified frames to export as annotations")
                common = {"frame_names": s.state.frame_names, "frames": s.state.verified,
                          "classes": s.state.classes or None,
                          "provenance": provenance(s.state, s.project_dir, s.state.verified)}
                if kind == "davis":
                    frames = np.asarray(s.frames)
                    images = frames if frames.dtype in (np.uint8, np.uint16) else None
                    out = write_davis(path, s.state.sequence, labels, images=images, **common)
                else:
                    out = write_mosxav(path, s.state.sequence, labels, **common)
        except (OSError, ValueError) as exc:
            show_error(f"export failed: {exc}")
            return None
        show_info(f"exported to {out}")
        return Path(out)

    def _export_davis_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "DAVIS dataset folder")
        if path:
            self.export("davis", path)

    def _export_mosxav_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "MOSXAV dataset folder")
        if path:
            self.export("mosxav", path)

    def _export_tiff_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "TIFF file", "", "TIFF (*.tif *.tiff)")
        if path:
            self.export("tiff", path)

    # -- teardown ----------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop workers, save, release key bindings."""
        self.cancel_segmentation()
        self.stop_finetune()
        if self._control is not None and self._control.process is not None:
            self._control.process.kill()
        self.propagating.cancel()
        self.save_now(force=True)
        self.reviewing.unbind_keys()
        self.propagating.unbind_keys()

