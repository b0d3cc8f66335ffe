"""The review panel: class legend, uncertainty strip, frames ranked by uncertainty (all, or
only those still to do), navigation and verification, overlay and contour toggles."""

from __future__ import annotations

import math

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._legend import ClassLegend
from ._session import (
    STATUS_EDITED,
    STATUS_NONE,
    STATUS_PROPAGATED,
    STATUS_PROPOSED,
    STATUS_VERIFIED,
    frame_status,
)
from ._strip import UncertaintyStrip

__all__ = ["STATUS_COLORS", "STATUS_EDITED", "STATUS_NONE", "STATUS_PROPOSED",
           "STATUS_VERIFIED", "ReviewPanel"]

#: status cell (background, text) colours, readable on napari's dark and light themes alike
#: (contrast 5:1 or more); a proposal keeps the theme's own colours
STATUS_COLORS = {
    STATUS_VERIFIED: (QColor("#2e7d32"), QColor("#ffffff")),
    STATUS_EDITED: (QColor("#ffb300"), QColor("#000000")),
    STATUS_PROPAGATED: (QColor("#1565c0"), QColor("#ffffff")),
}

KEY_PREVIOUS = "Shift+U"
KEY_NEXT = "U"
KEY_NEXT_UNVERIFIED = "N"
KEY_VERIFY = "K"


class ReviewPanel(QWidget):
    """Emits `frame_clicked(frame)`; the dock connects the buttons to the session."""

    frame_clicked = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.legend = ClassLegend()
        self.legend.setToolTip("click a class (or press its key) to paint with it")
        layout.addWidget(self.legend)
        self.strip = UncertaintyStrip()
        self.strip.frame_clicked.connect(self.frame_clicked)
        layout.addWidget(self.strip)
        self.todo_only = QCheckBox("To do only")
        self.todo_only.setToolTip("hide the verified frames: the table lists what is left")
        self.todo_only.toggled.connect(self._refilter)
        layout.addWidget(self.todo_only)
        self.table = QTableWidget(0, 3)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.setToolTip("frames by uncertainty, most doubtful first; click to go there")
        self.table.cellClicked.connect(self._clicked)
        layout.addWidget(self.table)
        buttons = QGridLayout()
        self.previous_button = QPushButton(f"Previous uncertain ({KEY_PREVIOUS})")
        self.previous_button.setToolTip(
            "go to the unverified frame just more uncertain than this one")
        self.next_button = QPushButton(f"Next uncertain ({KEY_NEXT})")
        self.next_button.setToolTip(
            "go to the most uncertain frame not yet verified; pressed again, the next one down")
        self.next_unverified_button = QPushButton(f"Next unverified ({KEY_NEXT_UNVERIFIED})")
        self.next_unverified_button.setToolTip("go to the next frame in time not yet verified")
        self.verify_button = QPushButton(f"Verify frame ({KEY_VERIFY})")
        self.verify_button.setToolTip(
            "mark the current frame's labels as correct: it becomes training data and is "
            "never overwritten by a new segmentation; press again to undo"
        )
        buttons.addWidget(self.previous_button, 0, 0)
        buttons.addWidget(self.next_button, 0, 1)
        buttons.addWidget(self.next_unverified_button, 1, 0)
        buttons.addWidget(self.verify_button, 1, 1)
        layout.addLayout(buttons)
        toggles = QHBoxLayout()
        self.show_uncertainty = QCheckBox("Uncertainty overlay")
        self.show_uncertainty.setChecked(True)
        self.contours = QCheckBox("Contours")
        self.show_samples = QCheckBox("Show K samples")
        self.show_samples.setToolTip(
            "draw the K diffusion samples of the frame on screen side by side, to the right of "
            "the frame: where they differ is what the uncertainty measures")
        toggles.addWidget(self.show_uncertainty)
        toggles.addWidget(self.contours)
        toggles.addWidget(self.show_samples)
        layout.addLayout(toggles)
        self.summary = QLabel("no frames segmented yet")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self._state = None
        self._current: int | None = None

    def _clicked(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is not None:
            self.frame_clicked.emit(int(item.data(Qt.UserRole)))

    def rows(self) -> list[tuple[int, str]]:
        """(frame, status) in table order (for tests and screenshots)."""
        out = []
        for r in range(self.table.rowCount()):
            out.append((int(self.table.item(r, 0).data(Qt.UserRole)),
                        self.table.item(r, 2).text()))
        return out

    def select_frame(self, frame: int) -> None:
        """Highlight the row of `frame` and its cell of the strip (without emitting
        frame_clicked); no row is highlighted when the frame is filtered out."""
        self._current = frame
        self.strip.set_current(frame)
        self.table.blockSignals(True)
        try:
            for row in range(self.table.rowCount()):
                item = self.table.item(row, 0)
                if item is not None and int(item.data(Qt.UserRole)) == frame:
                    self.table.selectRow(row)
                    return
            self.table.clearSelection()
        finally:
            self.table.blockSignals(False)

    def _refilter(self, *_args) -> None:
        if self._state is not None:
            self.update_from(self._state, self._current)

    def update_from(self, state, current: int | None = None) -> None:
        """Fill the table and the strip from a ProjectState: most uncertain first, statuses
        coloured; with *To do only* the verified frames leave the table."""
        self._state, self._current = state, current
        foreground = [(k, v) for k, v in sorted(state.classes.items()) if k != 0]
        headers = ["Frame", "Uncertainty", "Status"] + [name for _, name in foreground]
        self.table.setUpdatesEnabled(False)
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        verified, edited = set(state.verified), set(state.edited)
        ranking = state.ranking(unverified_only=self.todo_only.isChecked())
        self.table.setRowCount(len(ranking))
        for row, frame in enumerate(ranking):
            name = state.frame_names[frame] if frame < len(state.frame_names) else str(frame)
            score = state.frame_scores[frame]
            status = frame_status(state, frame)
            cells = [f"{frame} ({name})" if name != f"{frame:05d}" else str(frame),
                     "-" if score is None else f"{score:.3f}", status]
            per_class = (state.class_scores or [None] * (frame + 1))[frame] or []
            for k, _ in foreground:
                v = per_class[k] if k < len(per_class) else None
                cells.append("-" if v is None else f"{v:.3f}")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.UserRole, frame)
                if col == 2 and status in STATUS_COLORS:
                    background, foreground_color = STATUS_COLORS[status]
                    item.setBackground(background)
                    item.setForeground(foreground_color)
                self.table.setItem(row, col, item)
        if current is not None:
            self.select_frame(current)
        self.table.resizeColumnsToContents()
        self.table.setUpdatesEnabled(True)
        scores = [s for s in state.frame_scores if s is not None and math.isfinite(s)]
        self.strip.set_data(state.frame_scores,
                            [frame_status(state, i) for i in range(state.shape[0])],
                            current or 0, max(scores, default=1.0))
        n_seg = len(state.segmented)
        self.summary.setText(
            f"{n_seg}/{state.shape[0]} frames segmented, {len(verified)} verified, "
            f"{len(edited - verified)} corrected but not verified"
        )
