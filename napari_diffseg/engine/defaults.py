"""Defaults the dock shows before any model is loaded. Torch-free on purpose: the widgets
import this module when napari docks them, and importing torch there would freeze the window
for seconds (see the event-loop benchmark in docs/benchmarks.md)."""

from __future__ import annotations

#: SegmentOptions.precision: "auto" (bf16 where the device computes it in hardware, else
#: fp32), "fp32" or "bf16" (napari_diffseg.engine.device.inference_dtype); here so that the
#: command line can offer them without importing torch
PRECISIONS = ("auto", "fp32", "bf16")

#: What the dock's Fine-tune button runs unless the user changes it (TrainOptions fields):
#: sized to finish in minutes on a laptop CPU for a 512x512 video with a handful of verified
#: frames (``benchmarks/bench_finetune.py`` measures it).
FINETUNE_DEFAULTS = {
    "iterations": 300,
    "batch_size": 4,
    "crop_size": 128,
    "lr": 2e-4,
    "val_every": 50,
    "val_samples": 1,
    "val_steps": 2,
    # the method's uncertainty-weighted pseudo-labels (not the binary 0.8 gate): with anchors
    # +-4 on the propagation benchmark, fine-tune + re-segment 0.239 against 0.244 and with
    # propagation 0.232 against 0.255 (docs/benchmarks.md)
    "pseudo_weighting": "entropy",
}
#: the dock's default share of the verified frames held out to pick the best checkpoint
FINETUNE_VAL_FRACTION = 0.25
#: after a validated fine-tune the dock keeps (not worse than its start), a last stage of this
#: share of its iterations, at this share of its learning rate, trains the chosen weights on
#: every verified frame, the held-out ones included: the user corrected them, and the
#: validation has done its work (the checkpoint and whether to use the model are chosen).
#: Measured on 6 generated videos by ``benchmarks/bench_finetune.py`` (docs/benchmarks.md)
FINETUNE_REFIT_SHARE = 1 / 3
FINETUNE_REFIT_LR_SCALE = 0.5


def worse_than_before(best: float | None, before: float | None) -> bool:
    """The dock's guard after a fine-tune: True when the run's best validation Dice is below
    the starting model's on the same held-out frames. The new model is then kept in the
    project's history but not used (``benchmarks/bench_finetune.py`` reports the same)."""
    return best is not None and before is not None and best < before


#: neighbouring frames on each side a fine-tuned model sees (temporal context; a frame-wise
#: model is expanded, :func:`napari_diffseg.model.expand_context`); 0 keeps what the start
#: model sees (the bundled model sees t +- 1, and its fine-tunes keep them)
FINETUNE_CONTEXT_FRAMES = 0
#: verified frames' labels carried this many frames along the video's motion as anchors of the
#: pseudo-labels (0: none). Both measured by ``benchmarks/bench_propagation.py --ablation``
#: (docs/benchmarks.md): anchors ±4 lowered the error left after fine-tuning + re-segmenting
#: from 0.347 to 0.244; temporal context alone to 0.324, both to 0.323 (3 videos, one seed),
#: so the dock anchors by default and leaves temporal context to the user
FINETUNE_ANCHOR_FRAMES = 4

#: The labels' speck threshold the plugin uses (the dock, the CLI): components of a class under
#: 64 px at 512 x 512 (scaled with the frame area) become background; SegmentOptions itself
#: defaults to the plain argmax. Chosen for the phase-3 bundled model (docs/model.md): mean
#: Dice on 4 validation videos 0.751 at 16 px, 0.757 at 64, 0.779 at 128; on the 4 held-out
#: videos 0.767, 0.773, 0.762 (phase 4: 0.780, 0.781, 0.791 and 0.783, 0.794, 0.780) -- 64
#: and 128 are equals over the 8 videos, and 64 keeps more of the guidewire's short
#: fragments, which a user would rather correct than redraw
DEFAULT_MIN_COMPONENT = 64
