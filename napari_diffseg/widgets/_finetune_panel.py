"""The fine-tuning panel: settings, Start / Pause / Stop, live curves, re-segment."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_diffseg.engine.defaults import (
    FINETUNE_ANCHOR_FRAMES,
    FINETUNE_CONTEXT_FRAMES,
    FINETUNE_VAL_FRACTION,
)
from napari_diffseg.engine.defaults import FINETUNE_DEFAULTS as GUI_TRAIN_DEFAULTS

from ._plot import CurvePlot
from ._signals import on_click


def _spin_box(low: int, high: int, value: int, suffix: str = "", tip: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    if suffix:
        box.setSuffix(suffix)
    if tip:
        box.setToolTip(tip)
    return box


class FinetunePanel(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.mode = QComboBox()
        self.mode.addItem("semi-supervised (verified + unlabelled frames)", "semi")
        self.mode.addItem("supervised (verified frames only)", "supervised")
        form.addRow("Mode", self.mode)
        self.iterations = _spin_box(1, 100_000, GUI_TRAIN_DEFAULTS["iterations"])
        form.addRow("Iterations", self.iterations)
        self.context_frames = _spin_box(
            0, 2, FINETUNE_CONTEXT_FRAMES, " each side",
            "temporal context: the model also sees this many neighbouring frames on each side "
            "of the frame it segments (0: as many as the model it starts from, none for a "
            "frame-wise model). A frame-wise model starts exactly as it was and learns to use "
            "them; a model never loses them again")
        # 0 asks for nothing new: the start model keeps what it sees (context_frames_for)
        self.context_frames.setSpecialValueText("as the model")
        form.addRow("Neighbour frames", self.context_frames)
        self.anchor_frames = _spin_box(
            0, 10, FINETUNE_ANCHOR_FRAMES, " frames",
            "anchors: the verified frames' labels are carried along the video's motion to "
            "the frames this far away, and where that is reliable they replace the model's "
            "own pseudo-labels in training (0: none)")
        form.addRow("Anchor verified ±", self.anchor_frames)
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.0, 0.5)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(FINETUNE_VAL_FRACTION)
        self.val_fraction.setToolTip(
            "share of the verified frames held out to measure validation Dice; the best "
            "checkpoint by that Dice is kept (0: keep the last one)"
        )
        form.addRow("Validation share", self.val_fraction)
        self.val_frames = QLabel("")
        self.val_frames.setWordWrap(True)
        self.val_frames.setToolTip("verified frames held out of training to measure the "
                                   "validation Dice")
        form.addRow("Held out", self.val_frames)
        self.refit = QCheckBox("then train on them too")
        self.refit.setChecked(True)
        self.refit.setToolTip(
            "after the validation has chosen the checkpoint (and the run is kept, not worse "
            "than the model it started from), train it a third as many iterations more, at "
            "half the learning rate, on every verified frame, the held-out ones included")
        form.addRow("", self.refit)
        self.output = QLineEdit()
        self.output.setToolTip("the new checkpoint is written here")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        on_click(browse, self._browse_output)
        row = QHBoxLayout()
        row.addWidget(self.output)
        row.addWidget(browse)
        form.addRow("Checkpoint", row)
        layout.addLayout(form)
        self.extra = QListWidget()
        self.extra.setMaximumHeight(60)
        self.extra.setToolTip("other videos whose frames are used as unlabelled data")
        extra_row = QHBoxLayout()
        add = QPushButton("Add unlabelled videos…")
        on_click(add, self._add_extra)
        clear = QPushButton("Clear")
        on_click(clear, self.extra.clear)
        extra_row.addWidget(add)
        extra_row.addWidget(clear)
        layout.addWidget(self.extra)
        layout.addLayout(extra_row)
        self.adapt_button = QPushButton("Adapt to this video")
        self.adapt_button.setToolTip(
            "no corrected frame needed: the model segments the video, a vesselness prior adds "
            "the dark vessels it misses, and the model trains on these pseudo-labels (and on "
            "the verified frames, if any)")
        layout.addWidget(self.adapt_button)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Fine-tune")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("stop now and keep the best checkpoint so far")
        for b in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m iterations")
        layout.addWidget(self.progress)
        self.plot = CurvePlot()
        layout.addWidget(self.plot)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.resegment_button = QPushButton("Re-segment unverified frames with the new model")
        self.resegment_button.setEnabled(False)
        layout.addWidget(self.resegment_button)
        reseg_row = QHBoxLayout()
        self.reseg_progress = QProgressBar()
        self.reseg_progress.setFormat("re-segmenting: %v / %m frames")
        self.reseg_cancel_button = QPushButton("Cancel")
        self.reseg_cancel_button.setToolTip("stop the re-segmentation after the current frame")
        reseg_row.addWidget(self.reseg_progress, 1)
        reseg_row.addWidget(self.reseg_cancel_button)
        layout.addLayout(reseg_row)
        self.show_resegmenting(False)
        layout.addStretch(1)
        self.set_running(False)

    def show_resegmenting(self, running: bool) -> None:
        """The re-segmentation's progress bar and Cancel, shown while it runs."""
        self.reseg_progress.setVisible(running)
        self.reseg_cancel_button.setVisible(running)
        self.reseg_cancel_button.setEnabled(running)

    def set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.adapt_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        for w in (self.mode, self.iterations, self.val_fraction, self.refit, self.output,
                  self.context_frames, self.anchor_frames):
            w.setEnabled(not running)
        if not running:
            self.pause_button.setChecked(False)

    def show_stage(self, done: int, total: int, unit: str) -> None:
        """Progress of a stage counted in `unit` (frames, iterations)."""
        self.progress.setFormat(f"%v / %m {unit}")
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))

    def show_event(self, event: dict) -> None:
        """Show one event of the fine-tuning / adapting child (engine.finetune's events:
        status, started, validation_frames, validation_before, progress, checkpoint, done,
        error) in the status line, the progress bar, the curves and the held-out line."""
        kind = event.get("kind")
        if kind == "status":
            self.status.setText(event["message"])
            if "total" in event:  # a stage of adapting: frames, then iterations
                unit = "iterations" if event.get("stage") == "train" else "frames"
                self.show_stage(event["done"], event["total"], unit)
        elif kind == "started":
            self.status.setText(f"training on {event.get('device', '?')}…")
            self.show_stage(0, event["iterations"], "iterations")
        elif kind == "validation_frames":
            frames = event["frames"]
            if not frames:
                text = "none: every verified frame is trained on (no validation Dice)"
            else:
                text = (f"frame{'s' if len(frames) > 1 else ''} "
                        f"{', '.join(map(str, frames))} "
                        + ("(validation, then trained on if kept)"
                           if self.refit.isChecked() else "(validation only, not trained on)"))
            self.val_frames.setText(text)
        elif kind == "validation_before":
            self.plot.set_before(event["val_dice"])
            self.status.setText(f"validation Dice before training {event['val_dice']:.3f}; "
                                "training…")
        elif kind == "refit":
            self.show_stage(event["total"] - event["iterations"], event["total"], "iterations")
            self.plot.set_total(event["total"])
            self.status.setText(
                f"validated; now {event['iterations']} iterations on every verified frame, "
                f"the {event['frames']} held out included…")
        elif kind == "progress":
            if event.get("total") and event["total"] != self.progress.maximum():
                self.progress.setMaximum(int(event["total"]))
            self.progress.setValue(int(event["iteration"]))
            self.plot.add(int(event["iteration"]), event["losses"].get("total"),
                          event.get("val_dice"))
            eta = event["elapsed_s"] / max(event["iteration"], 1) * (
                event["total"] - event["iteration"])
            self.status.setText(
                f"iteration {event['iteration']}/{event['total']}, loss "
                f"{event['losses'].get('total', float('nan')):.3f}, about {eta:.0f} s left")
        elif kind == "checkpoint":
            self.status.setText(f"checkpoint saved: {event['path']}")
        elif kind == "done" and event.get("path") is None:  # adapting stopped early
            self.status.setText("stopped before training: no model written")
        elif kind == "done":
            best, before = event.get("best_val_dice"), event.get("val_dice_before")
            how = "stopped" if event.get("stopped") else "finished"
            dice = ""
            if best is not None:
                dice = f"best validation Dice {best:.3f}" + (
                    f", {before:.3f} before training" if before is not None else "")
            self.status.setText(f"{how}: checkpoint {event['path']}"
                                + (f" ({dice})" if dice else ""))
        elif kind == "error":
            self.status.setText(f"failed: {event['message']}")

    def options(self) -> dict:
        """TrainOptions fields, plus ``anchor_frames`` (a property of the training data)."""
        return {**GUI_TRAIN_DEFAULTS, "mode": self.mode.currentData(),
                "iterations": self.iterations.value(),
                "context_frames": self.context_frames.value(),
                "anchor_frames": self.anchor_frames.value()}

    def extra_videos(self) -> list[str]:
        return [self.extra.item(i).text() for i in range(self.extra.count())]

    def _browse_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Checkpoint file", self.output.text(),
                                              "Checkpoints (*.pt)")
        if path:
            self.output.setText(path)

    def _add_extra(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Unlabelled videos")
        for p in paths:
            self.extra.addItem(p)
