"""Which uncertainty the review follows: test-time augmentation (8 flipped / turned views, the
default: the best error detector and the best labels in docs/benchmarks.md) or the K diffusion
samples (faster on a CPU, ranks frames no better than chance). The dock reads
:meth:`UncertaintyChoice.mode` and passes it to the segmentation job; the engine's
:func:`~napari_diffseg.engine.inference.review_options` turns it into the frame score,
per-class scores and overlay map."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

MODES = (
    ("flips and turns, 8 views (best)", "tta",
     "the entropy of 8 flipped / turned views of each frame (test-time augmentation), one "
     "step each: the best error detector measured (pixel AUROC 0.955; the top 10 % of frames "
     "hold 21 % of the wrong pixels) and the best labels (mean Dice 0.53 against 0.48); "
     "2.5-3 times as slow as the samples on a CPU; Steps and Samples are ignored"),
    ("diffusion samples (faster)", "samples",
     "the disagreement (mutual information) of the K diffusion samples: the overlay, the frame "
     "score and the per-class columns; finds wrong pixels (AUROC 0.90) but ranks frames "
     "about as well as a random pick"),
)


class UncertaintyChoice(QComboBox):
    """A combo box of :data:`MODES`; `mode()` is "samples" or "tta"."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        for text, mode, tip in MODES:
            self.addItem(text, mode)
            self.setItemData(self.count() - 1, tip, 3)  # Qt.ToolTipRole
        self.setToolTip("what the uncertainty overlay and the frame ranking measure")

    def mode(self) -> str:
        return str(self.currentData())
