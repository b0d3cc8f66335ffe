"""A thin strip of per-frame uncertainty, one cell per frame in time order, that jumps to the
frame clicked: where the doubtful frames of the video are, at a glance, along the time axis."""

from __future__ import annotations

import math

from qtpy.QtCore import QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from ._session import STATUS_EDITED, STATUS_PROPAGATED, STATUS_VERIFIED

#: the stops of the uncertainty overlay (black, violet, light violet): a cell has the colour
#: the overlay gives the frame's score
_STOPS = ((0.0, (0, 0, 0)), (0.5, (128, 0, 255)), (1.0, (191, 128, 255)))
UNSCORED = QColor("#3a3d44")
VERIFIED_MARK = QColor("#43a047")
EDITED_MARK = QColor("#ffb300")
PROPAGATED_MARK = QColor("#42a5f5")


def score_color(value: float | None, top: float) -> QColor:
    """The overlay's colour for `value` on a 0..`top` scale; grey when not segmented."""
    if value is None or not math.isfinite(value) or top <= 0:
        return QColor(UNSCORED)
    x = min(max(value / top, 0.0), 1.0)
    for (x0, c0), (x1, c1) in zip(_STOPS, _STOPS[1:], strict=False):
        if x <= x1:
            f = (x - x0) / (x1 - x0)
            return QColor(*(round(a + f * (b - a)) for a, b in zip(c0, c1, strict=True)))
    return QColor(*_STOPS[-1][1])


class UncertaintyStrip(QWidget):
    """Emits `frame_clicked(frame)`; a green tick marks verified frames, amber edited ones, a
    white frame the one on screen."""

    frame_clicked = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.scores: list[float | None] = []
        self.statuses: list[str] = []
        self.current = 0
        self.top = 1.0
        self.setMinimumHeight(18)
        self.setMaximumHeight(22)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip("uncertainty of each frame in time order (brighter: more doubtful; "
                        "green tick: verified, amber: edited); click to go there")

    def set_data(self, scores, statuses, current: int, top: float) -> None:
        """scores: T frame scores (None: not segmented); statuses: T STATUS_* strings;
        top: the score drawn brightest (the overlay's upper limit)."""
        self.scores, self.statuses = list(scores), list(statuses)
        self.current, self.top = int(current), float(top)
        self.update()

    def set_current(self, frame: int) -> None:
        if frame != self.current:
            self.current = int(frame)
            self.update()

    def frame_at(self, x: float) -> int | None:
        n = len(self.scores)
        if n == 0 or self.width() <= 0:
            return None
        return min(max(int(x / self.width() * n), 0), n - 1)

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        pos = event.pos() if hasattr(event, "pos") else event.position()
        frame = self.frame_at(pos.x())
        if frame is not None:
            self.frame_clicked.emit(frame)
        event.accept()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        n = len(self.scores)
        painter = QPainter(self)
        if n == 0:
            painter.fillRect(self.rect(), UNSCORED)
            painter.end()
            return
        w, h = self.width() / n, self.height()
        for i, score in enumerate(self.scores):
            cell = QRectF(i * w, 0, math.ceil(w), h)
            painter.fillRect(cell, score_color(score, self.top))
            status = self.statuses[i] if i < len(self.statuses) else ""
            mark = {STATUS_VERIFIED: VERIFIED_MARK, STATUS_EDITED: EDITED_MARK,
                    STATUS_PROPAGATED: PROPAGATED_MARK}.get(status)
            if mark is not None:
                painter.fillRect(QRectF(i * w, h - 4, math.ceil(w), 4), mark)
        painter.setPen(QPen(QColor("white"), 2))
        painter.drawRect(QRectF(self.current * w + 1, 1, max(w - 2, 1), h - 2))
        painter.end()
