"""A small live plot of training curves (loss and validation Dice), drawn with QPainter so the
dock needs no plotting library."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LEFT, RIGHT, TOP, BOTTOM = 44, 34, 8, 34  # room for the tick labels and the legend line


class CurvePlot(QWidget):
    """Two curves against the iteration (x axis): loss (left axis, log scale) and validation
    Dice (right axis, 0 to 1), with the Dice of the model before training as a dashed line."""

    LOSS_COLOR = QColor("#4fa3ff")
    DICE_COLOR = QColor("#ffb347")
    AXIS_COLOR = QColor("#aaaaaa")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []
        self.dice: list[tuple[int, float]] = []
        self.before: float | None = None
        self.total = 1
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.setToolTip("blue: training loss (left axis, log scale); orange: validation Dice "
                        "(right axis, 0-1); dashed: validation Dice before training")

    def clear(self, total: int = 1) -> None:
        self.loss, self.dice, self.before = [], [], None
        self.set_total(total)

    def set_total(self, total: int) -> None:
        """Widen the iteration axis (a run that goes on with a last stage)."""
        self.total = max(int(total), 1)
        self.update()

    def add(self, iteration: int, loss: float | None, dice: float | None = None) -> None:
        if loss is not None and math.isfinite(loss) and loss > 0:
            self.loss.append((iteration, loss))
        if dice is not None and math.isfinite(dice):
            self.dice.append((iteration, dice))
        self.update()

    def set_before(self, dice: float | None) -> None:
        """The validation Dice of the model before training (None or NaN: not known)."""
        self.before = dice if dice is not None and math.isfinite(dice) else None
        self.update()

    def _loss_range(self) -> tuple[float, float]:
        logs = [math.log10(v) for _, v in self.loss]
        lo, hi = min(logs), max(logs)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        return lo, hi

    def ticks(self) -> dict[str, list[str]]:
        """The tick labels of the three axes: x (iteration), loss (left), dice (right)."""
        x = [str(v) for v in sorted({0, self.total // 2, self.total})]
        loss = []
        if self.loss:
            lo, hi = self._loss_range()
            loss = [f"{10 ** v:.3g}" for v in (hi, (lo + hi) / 2, lo)]
        return {"x": x, "loss": loss, "dice": ["1", "0.5", "0"]}

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        x0, y0 = LEFT, TOP
        w, h = max(self.width() - LEFT - RIGHT, 10), max(self.height() - TOP - BOTTOM, 10)
        painter.setPen(QPen(QColor("#666666"), 1))
        painter.drawRect(QRectF(x0, y0, w, h))
        ticks = self.ticks()

        def to_x(it: float) -> float:
            return x0 + w * it / self.total

        # x axis: iterations
        painter.setPen(QPen(self.AXIS_COLOR))
        for label in ticks["x"]:
            x = to_x(int(label))
            painter.drawLine(QPointF(x, y0 + h), QPointF(x, y0 + h + 3))
            painter.drawText(QRectF(x - 30, y0 + h + 3, 60, 12), Qt.AlignHCenter, label)
        painter.drawText(QRectF(x0, y0 + h + 3, w, 12), Qt.AlignRight, "iteration")
        # right axis: Dice 0..1
        painter.setPen(QPen(self.DICE_COLOR))
        for label in ticks["dice"]:
            y = y0 + h * (1 - float(label))
            painter.drawLine(QPointF(x0 + w, y), QPointF(x0 + w + 3, y))
            painter.drawText(QRectF(x0 + w + 4, y - 6, RIGHT - 4, 12), Qt.AlignLeft, label)
        # left axis: loss, log scale
        loss_y = None
        if self.loss:
            lo, hi = self._loss_range()

            def loss_y(v: float) -> float:
                return y0 + h * (1 - (math.log10(v) - lo) / (hi - lo))

            painter.setPen(QPen(self.LOSS_COLOR))
            for label, value in zip(ticks["loss"], (hi, (lo + hi) / 2, lo), strict=True):
                y = loss_y(10 ** value)
                painter.drawLine(QPointF(x0 - 3, y), QPointF(x0, y))
                painter.drawText(QRectF(0, y - 6, LEFT - 4, 12), Qt.AlignRight, label)
            painter.setPen(QPen(self.LOSS_COLOR, 1.5))
            painter.drawPolyline(QPolygonF([QPointF(to_x(it), loss_y(v)) for it, v in self.loss]))
        if self.before is not None:
            pen = QPen(self.DICE_COLOR, 1, Qt.DashLine)
            painter.setPen(pen)
            y = y0 + h * (1 - self.before)
            painter.drawLine(QPointF(x0, y), QPointF(x0 + w, y))
        if self.dice:
            painter.setPen(QPen(self.DICE_COLOR, 2))
            poly = QPolygonF([QPointF(to_x(it), y0 + h * (1 - v)) for it, v in self.dice])
            painter.drawPolyline(poly)
            for p in poly:
                painter.drawEllipse(p, 2.5, 2.5)
        painter.setPen(QPen(self.AXIS_COLOR))
        painter.drawText(QRectF(x0, y0 + h + 17, w, 14), Qt.AlignLeft, self.legend_text())
        painter.end()

    def legend_text(self) -> str:
        """The line under the plot: the latest loss and Dice, and the Dice before training."""
        text = []
        if self.loss:
            text.append(f"loss {self.loss[-1][1]:.3f}")
        if self.dice:
            best = max(v for _, v in self.dice)
            text.append(f"val Dice {self.dice[-1][1]:.3f} (best {best:.3f})")
        if self.before is not None:
            text.append(f"before {self.before:.3f}")
        return "   ".join(text) or "no data yet"
