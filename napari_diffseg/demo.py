"""`make demo` / `napari-diffseg demo`: napari with the plugin and the sample angiogram loaded."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_VIDEO = SAMPLE_DIR / "coronary_demo.mp4"
SAMPLE_LABELS = SAMPLE_DIR / "coronary_demo" / "Annotations" / "coronary_demo"

NO_DISPLAY_MESSAGE = """\
napari-diffseg demo: no display found (DISPLAY and WAYLAND_DISPLAY are unset).
napari needs a screen. On a machine without one, run it under a virtual display:
    xvfb-run -a make demo
or, with the venv already set up:
    xvfb-run -a .venv/bin/napari-diffseg demo --screenshot demo.png
"""


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(screenshot: Path | None = None) -> int:
    """Open napari with the sample video and its labels. With `screenshot`, save a picture of
    the whole window once it is drawn and quit. Returns a process exit code."""
    if not has_display():
        print(NO_DISPLAY_MESSAGE, file=sys.stderr)
        return 3
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title="napari-diffseg demo")
    mid = _load_sample(viewer)
    viewer.dims.set_current_step(0, mid)
    viewer.window._qt_window.resize(1400, 900)
    if screenshot is not None:
        def _shoot() -> None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            viewer.screenshot(str(screenshot), canvas_only=False)
            print(f"screenshot saved to {screenshot}")
            viewer.close()

        QTimer.singleShot(2500, _shoot)
    napari.run()
    return 0


def _load_sample(viewer) -> int:
    """Add the sample video and labels to `viewer`; returns a frame worth showing first."""
    from napari.layers import Layer

    from napari_diffseg._layers import video_to_layers
    from napari_diffseg.io import read

    if SAMPLE_VIDEO.exists() and SAMPLE_LABELS.exists():
        viewer.open(str(SAMPLE_VIDEO), plugin="napari-diffseg")
        annotated = read(SAMPLE_LABELS)
        _frames, labels_layer = video_to_layers(annotated)  # the MP4 already gave the frames
        viewer.add_layer(Layer.create(*labels_layer))
        labelled = annotated.labelled or [0]
        return labelled[len(labelled) // 2]
    logger.warning("sample_data/ not found next to the package; generating a sample instead")
    viewer.open_sample("napari-diffseg", "synthetic_angiogram")
    return viewer.dims.nsteps[0] // 2
