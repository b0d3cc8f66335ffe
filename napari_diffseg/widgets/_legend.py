"""The class legend of the Review tab: one entry per class (swatch, name, hotkey); clicking an
entry or pressing its key picks that class as the label napari paints with.

The keys are F1 … F9 for classes 1 … 9: napari's Labels layer already uses 1–7 (tool modes),
E P F L Z M X B - = [ ] (tools and label ids) and the viewer V, Space and the arrows; Shift with
a digit reaches napari as the layout's symbol ("!" on a US keyboard), so it is no key to rely on.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import QPushButton, QVBoxLayout, QWidget

from napari_diffseg._layers import class_colormap

from ._signals import on_click

#: hotkey of class k is CLASS_KEYS[k - 1]
CLASS_KEYS = tuple(f"F{k}" for k in range(1, 10))


def class_key(label: int) -> str | None:
    """The hotkey of class `label` (1-based), None for the background or past F9."""
    return CLASS_KEYS[label - 1] if 1 <= label <= len(CLASS_KEYS) else None


def swatch_color(value) -> QColor:
    """A colormap entry (a name, "#rrggbb" or an RGBA array in 0..1) as an opaque QColor."""
    if isinstance(value, str):
        color = QColor(value)
    else:
        r, g, b = (float(v) for v in np.asarray(value, dtype=float)[:3])
        color = QColor.fromRgbF(r, g, b)
    color.setAlpha(255)
    return color


class ClassLegend(QWidget):
    """Emits `class_chosen(label)` when an entry is clicked; :meth:`set_selected` marks the
    label the layer paints with (checked entry, bold)."""

    class_chosen = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(1)
        self.buttons: dict[int, QPushButton] = {}
        self._selected: int | None = None

    def set_classes(self, classes: dict[int, str], colors: dict | None = None) -> None:
        """One entry per foreground class, in `colors` (label -> colour: what the labels layer
        shows) or else the colours :func:`class_colormap` gives the labels layer."""
        classes = {int(k): str(v) for k, v in classes.items() if int(k) != 0}
        colormap = {**class_colormap(classes, max(classes, default=0)), **(colors or {})}
        shown = {k: (b.property("class_name"), b.property("swatch"))
                 for k, b in self.buttons.items()}
        if shown == {k: (v, swatch_color(colormap[k]).name()) for k, v in classes.items()}:
            return
        for button in self.buttons.values():
            self._layout.removeWidget(button)
            button.deleteLater()
        self.buttons = {}
        for label, name in sorted(classes.items()):
            key = class_key(label)
            button = QPushButton(f"{label}  {name}" + (f"   ({key})" if key else ""))
            button.setProperty("class_name", name)
            color = swatch_color(colormap[label])
            button.setProperty("swatch", color.name())
            pixmap = QPixmap(14, 14)
            pixmap.fill(color)
            button.setIcon(QIcon(pixmap))
            button.setCheckable(True)
            button.setFlat(True)
            button.setStyleSheet("text-align: left; padding: 2px 6px;")
            button.setToolTip(f"paint with {name} (label {label})"
                              + (f"; key {key}" if key else ""))
            on_click(button, lambda label=label: self._clicked(label))
            self._layout.addWidget(button)
            self.buttons[label] = button
        self.set_selected(self._selected)

    def _clicked(self, label: int) -> None:
        self.set_selected(label)  # a checkable button unchecks itself when clicked twice
        self.class_chosen.emit(label)

    def set_selected(self, label: int | None) -> None:
        self._selected = None if label is None else int(label)
        for k, button in self.buttons.items():
            on = k == self._selected
            button.setChecked(on)
            font = button.font()
            font.setBold(on)
            button.setFont(font)

    def selected(self) -> int | None:
        """The class whose entry is marked selected (None: none of the legend's)."""
        return next((k for k, b in self.buttons.items() if b.isChecked()), None)
