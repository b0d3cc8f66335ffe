"""A small live plot of training curves (loss and validation Dice), drawn with QPainter so the
dock needs no plotting library."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class CurvePlot(QWidget):
    """Two curves against the iteration: loss (left scale, log) and validation Dice (0..1)."""

    LOSS_COLOR = QColor("#4fa3ff")
    DICE_COLOR = QColor("#ffb347")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []
        self.dice: list[tuple[int, float]] = []
        self.total = 1
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.setToolTip("blue: training loss (log scale); orange: validation Dice (0-1)")

    def clear(self, total: int = 1) -> None:
        self.loss, self.dice, self.total = [], [], max(int(total), 1)
        self.update()

    def add(self, iteration: int, loss: float | None, dice: float | None = None) -> None:
        if loss is not None and math.isfinite(loss) and loss > 0:
            self.loss.append((iteration, loss))
        if dice is not None and math.isfinite(dice):
            self.dice.append((iteration, dice))
        self.update()

    def _polyline(self, points, to_y, rect) -> QPolygonF:
        x0, w = rect[0], rect[2]
        return QPolygonF([QPointF(x0 + w * it / self.total, to_y(v)) for it, v in points])

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        margin = 6
        x0, y0 = margin, margin
        w, h = self.width() - 2 * margin, self.height() - 2 * margin - 14
        painter.setPen(QPen(QColor("#666666"), 1))
        painter.drawRect(x0, y0, w, h)
        if self.loss:
            logs = [math.log10(v) for _, v in self.loss]
            lo, hi = min(logs), max(logs)
            span = max(hi - lo, 1e-6)

            def loss_y(v: float) -> float:
                return y0 + h * (1 - (math.log10(v) - lo) / span)

            painter.setPen(QPen(self.LOSS_COLOR, 1.5))
            painter.drawPolyline(self._polyline(self.loss, loss_y, (x0, y0, w, h)))
        if self.dice:
            painter.setPen(QPen(self.DICE_COLOR, 2))
            poly = self._polyline(self.dice, lambda v: y0 + h * (1 - v), (x0, y0, w, h))
            painter.drawPolyline(poly)
            for p in poly:
                painter.drawEllipse(p, 2.5, 2.5)
        painter.setPen(QPen(QColor("#aaaaaa")))
        text = []
        if self.loss:
            text.append(f"loss {self.loss[-1][1]:.3f}")
        if self.dice:
            text.append(f"val Dice {self.dice[-1][1]:.3f}")
        painter.drawText(x0, y0 + h + 2, w, 14, Qt.AlignLeft, "   ".join(text) or "no data yet")
        painter.end()
