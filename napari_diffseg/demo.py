"""`make demo` / `napari-diffseg demo`: napari with the plugin and the sample angiogram loaded."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from napari_diffseg.io.project import PROJECT_DIR_KEY, user_projects_dir

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


def demo_project_dir() -> Path:
    """Annotation project of the demo's sample: in the user's projects folder (see
    :func:`napari_diffseg.io.project.user_projects_dir`), not beside the bundled video."""
    return user_projects_dir() / "coronary_demo.diffseg"


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

    quiet_pyqt5_notice()
    viewer = napari.Viewer(title="napari-diffseg demo")
    viewer.window._qt_window.resize(1400, 900)
    mid = _load_sample(viewer)
    # the dock on the sample, as README's picture shows; it adopts the sample's labelled
    # frames as verified and refits the view once docked
    _, dock = viewer.window.add_plugin_dock_widget("napari-diffseg", "Diffusion segmentation")
    viewer.dims.set_current_step(0, mid)
    if dock.session is not None:
        print(f"dock on {dock.session.name}: {len(dock.session.state.verified)} verified "
              f"frames; your work is saved in {dock.session.project_dir}", file=sys.stderr)
    if screenshot is not None:
        def _shoot() -> None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            viewer.screenshot(str(screenshot), canvas_only=False)
            print(f"screenshot saved to {screenshot}")
            viewer.close()

        QTimer.singleShot(2500, _shoot)
    napari.run()
    return 0


def quiet_pyqt5_notice() -> None:
    """napari (0.6 and later) greets every PyQt5 window with a toast saying its PyQt5 support
    is deprecated; it covers the canvas the demo is about. Say it once in the terminal instead
    (docs/install.md tells how to run on PyQt6 or PySide6). Uses napari's private flag, so a
    napari without it is left alone."""
    import warnings

    warnings.filterwarnings("ignore", message="System theme detection requires a Qt6 backend")
    try:
        from napari._qt import qt_main_window
    except ImportError:
        return
    if getattr(qt_main_window, "SHOW_QT_WARNING", False):
        qt_main_window.SHOW_QT_WARNING = False
        print("note: napari has deprecated its PyQt5 backend, which this install uses; "
              "docs/install.md says how to use PyQt6 or PySide6", file=sys.stderr)


def _load_sample(viewer) -> int:
    """Add the sample video and labels to `viewer`; returns a frame worth showing first."""
    from napari.layers import Layer

    from napari_diffseg._layers import video_to_layers
    from napari_diffseg.io import read

    if SAMPLE_VIDEO.exists() and SAMPLE_LABELS.exists():
        [video_layer] = viewer.open(str(SAMPLE_VIDEO), plugin="napari-diffseg")
        # the work on the sample is the user's: keep it out of the package's sample_data/
        video_layer.metadata[PROJECT_DIR_KEY] = str(demo_project_dir())
        annotated = read(SAMPLE_LABELS)
        _frames, labels_layer = video_to_layers(annotated)  # the MP4 already gave the frames
        viewer.add_layer(Layer.create(*labels_layer))
        labelled = annotated.labelled or [0]
        return labelled[len(labelled) // 2]
    logger.warning("sample_data/ not found next to the package; generating a sample instead")
    viewer.open_sample("napari-diffseg", "synthetic_angiogram")
    return viewer.dims.nsteps[0] // 2
