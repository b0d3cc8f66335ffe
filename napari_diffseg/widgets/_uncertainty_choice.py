"""Which uncertainty the review follows: test-time augmentation (8 flipped / turned views, the
default: the best error detector at 512 px and the best labels on the held-out videos in
docs/benchmarks.md and docs/model.md) or the K diffusion samples (2.5-3 times faster on a CPU,
a weaker pixel map, nearly as good a frame ranking). The dock reads
:meth:`UncertaintyChoice.mode` and passes it to the segmentation job; the engine's
:func:`~napari_diffseg.engine.inference.review_options` turns it into the frame score,
per-class scores and overlay map."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

MODES = (
    ("flips and turns, 8 views (best)", "tta",
     "the entropy of 8 flipped / turned views of each frame (test-time augmentation), one "
     "step each: the best error detector measured on 512 px videos (pixel AUROC 0.979; the "
     "top 10 % of frames hold 21 % of the wrong pixels, chance 10 %) and the best labels on "
     "the held-out videos (mean HD95 19 px against 24); 2.5-3 times as slow as the samples "
     "on a CPU; on 256 px videos its frame ranking is no better than chance; Steps and "
     "Samples are ignored"),
    ("diffusion samples (faster)", "samples",
     "the disagreement (mutual information) of the K diffusion samples: the overlay, the frame "
     "score and the per-class columns; finds wrong pixels (AUROC 0.92) and ranks frames "
     "nearly as well (19 % of the wrong pixels in the top 10 % of frames at 512 px)"),
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
