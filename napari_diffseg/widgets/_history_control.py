"""The Fine-tune tab's model history: every model made in this project, switch and roll back.

Each fine-tuning or adaptation run writes a new checkpoint ``<project>/models/model-NNN.pt``
(the Checkpoint field shows the next free name) and, when it ends, its record
``model-NNN.json`` (parent model, verified and held-out frames, options, validation Dice,
time: :mod:`napari_diffseg.io.model_history`). The list shows them, newest first, the current
one marked; *Use this model* makes the selected one current (Segment, Re-segment and the next
fine-tune start from it), *Roll back* goes to the current model's parent. The current model's
name is kept in the project state's settings, so reopening the video restores it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_diffseg.io.errors import WriteError
from napari_diffseg.io.model_history import (
    BUNDLED_NAME,
    ModelRecord,
    list_models,
    model_file,
    model_name,
    model_path_for,
    models_dir,
    next_model_id,
    record_model_at,
)

from ._signals import on_click

logger = logging.getLogger(__name__)

#: the project state's settings key holding the current model's name
CURRENT_MODEL_KEY = "current_model"


class HistoryPanel(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Models of this project (newest first)"))
        self.models = QListWidget()
        self.models.setMaximumHeight(110)
        self.models.setToolTip("every model fine-tuned or adapted here, with its parent, "
                               "validation Dice and time; ● marks the current one")
        layout.addWidget(self.models)
        row = QHBoxLayout()
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("segment, re-segment and fine-tune from the selected model")
        self.rollback_button = QPushButton("Roll back")
        self.rollback_button.setToolTip("go back to the model the current one was made from")
        row.addWidget(self.use_button)
        row.addWidget(self.rollback_button)
        layout.addLayout(row)

    def selected(self) -> str | None:
        item = self.models.currentItem()
        return None if item is None else item.data(Qt.UserRole)


class ModelHistoryController:
    """Keeps the dock's model choice, the Fine-tune tab's list and ``models/`` in step."""

    def __init__(self, dock) -> None:
        self.dock = dock
        self.panel = HistoryPanel()
        self._pending: ModelRecord | None = None
        on_click(self.panel.use_button, lambda: self.use(self.panel.selected()))
        on_click(self.panel.rollback_button, self.rollback)

    @property
    def project_dir(self) -> Path | None:
        session = self.dock.session
        return None if session is None else session.project_dir

    # -- the current model -------------------------------------------------------------------
    def current(self) -> str:
        """The current model's name: a history id, "bundled" or a checkpoint path."""
        text = self.dock.model_edit.text().strip()
        return model_name(text, self.project_dir) if text else BUNDLED_NAME

    def use(self, name: str | None) -> Path | None:
        """Make the model `name` current; its checkpoint, or None if there is none."""
        if not name or self.project_dir is None:
            return None
        path = model_path_for(name, self.project_dir)
        if path is None or not path.is_file():
            self.dock.notify_warning(
                f"model {name} has no checkpoint in {models_dir(self.project_dir)}")
            return None
        self.dock.model_edit.setText("" if name == BUNDLED_NAME else str(path))
        if name != BUNDLED_NAME:
            self.dock.last_checkpoint = str(path)
            self.dock.finetune.resegment_button.setEnabled(self.dock.segment_worker is None)
        session = self.dock.session
        if session.state.settings.get(CURRENT_MODEL_KEY) != name:
            session.state.settings[CURRENT_MODEL_KEY] = name
            session.dirty_state = True
            self.dock.schedule_save()
        self.refresh()
        return path

    def rollback(self) -> str | None:
        """Use the current model's parent; its name, or None at the root of the history."""
        if self.project_dir is None:
            return None
        current = self.current()
        record = next((r for r in list_models(self.project_dir) if r.id == current), None)
        if record is None or not record.parent:
            self.dock.notify_info(f"{current} has no earlier model in this project")
            return None
        parent = model_name(record.parent, self.project_dir)
        return parent if self.use(parent) is not None else None

    # -- the project -------------------------------------------------------------------------
    def open_project(self) -> None:
        """A video was chosen: list its models, restore its current model, name the next."""
        session = self.dock.session
        name = session.state.settings.get(CURRENT_MODEL_KEY)
        if name and name != BUNDLED_NAME:
            path = model_path_for(name, session.project_dir)
            if path is not None and path.is_file():
                self.dock.model_edit.setText(str(path))
                self.dock.last_checkpoint = str(path)
        self.next_output()
        self.refresh()

    def next_output(self) -> Path:
        """Put the next free ``models/model-NNN.pt`` into the Checkpoint field."""
        path = model_file(self.project_dir, next_model_id(self.project_dir))
        self.dock.finetune.output.setText(str(path))
        return path

    def refresh(self) -> None:
        panel = self.panel
        panel.models.clear()
        if self.project_dir is None:
            return
        current = self.current()
        records = list_models(self.project_dir)
        entries = [(r.id, r.describe()) for r in reversed(records)]
        entries.append((BUNDLED_NAME, "bundled · the packaged default model"))
        for name, text in entries:
            mark = "● " if name == current else "   "
            item = QListWidgetItem(mark + text)
            item.setData(Qt.UserRole, name)
            panel.models.addItem(item)
            if name == current:
                panel.models.setCurrentItem(item)

    # -- recording runs ----------------------------------------------------------------------
    def started(self, kind: str, init: str | None, output: str | Path, verified: list[int],
                options: dict, val_fraction: float = 0.0) -> None:
        """A fine-tuning ("finetune") or adaptation ("adapt") run writing `output` began."""
        from napari_diffseg.engine.finetune import held_out_frames

        output = Path(output)
        session = self.dock.session
        self._pending = ModelRecord(
            id=output.stem, kind=kind, parent=model_name(init, self.project_dir),
            verified=sorted(int(i) for i in verified),
            held_out=held_out_frames(verified, val_fraction) if kind == "finetune" else [],
            options=dict(options), video=session.state.video if session else "")
        self._pending_path = output

    def finished(self, event: dict, use: bool = True) -> ModelRecord | None:
        """The run's ``done`` event: write the record next to the checkpoint, make the new
        model current if `use` (the dock says no when it scored worse on the held-out frames
        than the model it started from: see
        :func:`~napari_diffseg.engine.defaults.worse_than_before`) and name the next one."""
        record, self._pending = self._pending, None
        if record is None or not event.get("path"):
            return None
        metrics = event.get("metrics") or {}
        record.val_dice = event.get("best_val_dice")
        record.val_dice_before = event.get("val_dice_before")
        record.iterations = metrics.get("iterations")
        record.refit_iterations = int(metrics.get("refit_iterations") or 0)
        record.stopped = bool(event.get("stopped"))
        path = Path(event["path"])
        try:
            record_model_at(path, record)
        except (OSError, WriteError) as exc:
            self.dock.notify_error(f"could not record model {record.id}: {exc}")
        if self.project_dir is not None:
            if use:
                self.dock.model_edit.setText(str(path))
                self.use(model_name(path, self.project_dir))
            else:  # kept in the list, where the user can still choose it
                self.refresh()
            self.next_output()
        return record
