"""Which uncertainty the review follows: the K diffusion samples (fast) or test-time
augmentation (8 flipped / turned views, about 3x slower on a CPU, the best error detector in
docs/benchmarks.md). The dock reads :meth:`UncertaintyChoice.mode` and passes it to the
segmentation job; the engine's :func:`~napari_diffseg.engine.inference.review_options` turns
it into the frame score, per-class scores and overlay map."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

MODES = (
    ("diffusion samples (fast)", "samples",
     "the disagreement (mutual information) of the K diffusion samples: the overlay, the frame "
     "score and the per-class columns; finds about as many wrong frames as a random pick"),
    ("flips and turns, 8 views (~3x slower)", "tta",
     "the entropy of 8 flipped / turned views of each frame (test-time augmentation), one "
     "step each: the best error detector measured (pixel AUROC 0.955; the top 10 % of frames "
     "hold 21 % of the wrong pixels), and slightly better labels; Steps and Samples are "
     "ignored"),
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
