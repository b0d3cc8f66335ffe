"""The review panel: frames ranked by uncertainty, verification, overlay and contour toggles."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

STATUS_VERIFIED = "verified"
STATUS_EDITED = "edited"
STATUS_PROPOSED = "proposed"
STATUS_NONE = "-"


class ReviewPanel(QWidget):
    """Emits `frame_clicked(frame)`; the dock connects the buttons to the session."""

    frame_clicked = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.table = QTableWidget(0, 3)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.setToolTip("frames by uncertainty, most doubtful first; click to go there")
        self.table.cellClicked.connect(self._clicked)
        layout.addWidget(self.table)
        buttons = QHBoxLayout()
        self.next_button = QPushButton("Next uncertain (U)")
        self.next_button.setToolTip("go to the most uncertain frame not yet verified")
        self.verify_button = QPushButton("Verify frame (K)")
        self.verify_button.setToolTip(
            "mark the current frame's labels as correct: it becomes training data and is "
            "never overwritten by a new segmentation; press again to undo"
        )
        buttons.addWidget(self.next_button)
        buttons.addWidget(self.verify_button)
        layout.addLayout(buttons)
        toggles = QHBoxLayout()
        self.show_uncertainty = QCheckBox("Uncertainty overlay")
        self.show_uncertainty.setChecked(True)
        self.contours = QCheckBox("Contours")
        toggles.addWidget(self.show_uncertainty)
        toggles.addWidget(self.contours)
        layout.addLayout(toggles)
        self.summary = QLabel("no frames segmented yet")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)

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
        """Highlight the row of `frame` (without emitting frame_clicked)."""
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and int(item.data(Qt.UserRole)) == frame:
                self.table.blockSignals(True)
                self.table.selectRow(row)
                self.table.blockSignals(False)
                return

    def update_from(self, state, current: int | None = None) -> None:
        """Fill the table from a ProjectState: most uncertain first, verified marked."""
        foreground = [(k, v) for k, v in sorted(state.classes.items()) if k != 0]
        headers = ["Frame", "Uncertainty", "Status"] + [name for _, name in foreground]
        self.table.setUpdatesEnabled(False)
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        ranking = state.ranking()
        self.table.setRowCount(len(ranking))
        verified, edited = set(state.verified), set(state.edited)
        segmented = set(state.segmented)
        for row, frame in enumerate(ranking):
            name = state.frame_names[frame] if frame < len(state.frame_names) else str(frame)
            score = state.frame_scores[frame]
            if frame in verified:
                status = STATUS_VERIFIED
            elif frame in edited:
                status = STATUS_EDITED
            elif frame in segmented:
                status = STATUS_PROPOSED
            else:
                status = STATUS_NONE
            cells = [f"{frame} ({name})" if name != f"{frame:05d}" else str(frame),
                     "-" if score is None else f"{score:.3f}", status]
            per_class = (state.class_scores or [None] * (frame + 1))[frame] or []
            for k, _ in foreground:
                v = per_class[k] if k < len(per_class) else None
                cells.append("-" if v is None else f"{v:.3f}")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.UserRole, frame)
                if status == STATUS_VERIFIED:
                    item.setForeground(Qt.darkGreen if col == 2 else item.foreground())
                self.table.setItem(row, col, item)
        if current is not None:
            self.select_frame(current)
        self.table.resizeColumnsToContents()
        self.table.setUpdatesEnabled(True)
        n_seg = len(segmented)
        self.summary.setText(
            f"{n_seg}/{state.shape[0]} frames segmented, {len(verified)} verified, "
            f"{len(edited - verified)} corrected but not verified"
        )
