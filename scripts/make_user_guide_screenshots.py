"""Regenerate the screenshots of docs/user-guide.md from the real dock widget.

Runs the whole workflow on the sample video with the bundled model: open, segment, review,
correct + verify a frame, propagate it, fine-tune briefly, and saves a picture of the napari
window at each step. Needs a display; on a headless machine:

    xvfb-run -a .venv/bin/python scripts/make_user_guide_screenshots.py

Takes a few minutes on a laptop CPU (segmentation of 40 frames of 512 x 512).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_diffseg.demo import quiet_pyqt5_notice

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "sample_data" / "coronary_demo.mp4"
TRUTH = ROOT / "sample_data" / "coronary_demo"


def wait(predicate, timeout: float = 1800.0) -> None:
    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.02)


def shoot(viewer, path: Path) -> None:
    QApplication.instance().processEvents()
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"saved {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from napari_diffseg.io import read

    work = Path(tempfile.mkdtemp(prefix="diffseg-guide-"))
    video = work / VIDEO.name
    shutil.copy(VIDEO, video)
    truth = read(TRUTH, sequence="coronary_demo")
    try:
        quiet_pyqt5_notice()  # napari's PyQt5 toast would cover the canvas, as in the demo
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1500, 950)
        viewer.open(str(video), plugin="napari-diffseg")
        _, dock = viewer.window.add_plugin_dock_widget("napari-diffseg", "Diffusion segmentation")
        dock.start_segmentation("all")
        wait(lambda: dock.segment_worker is None)
        shoot(viewer, args.out / "guide-segment.png")

        dock.tabs.setCurrentWidget(dock.review)
        frame = dock.next_uncertain()
        shoot(viewer, args.out / "guide-review.png")

        # a "correction": the true labels of the most uncertain frame, then verify it
        labels = viewer.layers["coronary_demo pseudo-labels"]
        if frame in truth.labelled:
            labels.data[frame] = truth.labels[frame]
        labels.paint((frame, 10, 10), int(labels.data[frame, 10, 10]))
        dock.toggle_verified(frame)
        for other in truth.labelled[:3]:
            if other != frame:
                labels.data[other] = truth.labels[other]
                labels.paint((other, 10, 10), int(labels.data[other, 10, 10]))
                dock.toggle_verified(other)
        dock.review.contours.setChecked(True)
        dock.review.todo_only.setChecked(True)  # the to-do view: verified rows leave the table
        shoot(viewer, args.out / "guide-verified.png")
        dock.review.contours.setChecked(False)
        dock.review.todo_only.setChecked(False)

        # propagate the last verified frame to its neighbours (the J key)
        source = dock.session.state.verified[-1]
        dock.go_to_frame(source)
        dock.propagating.start(source)
        wait(lambda: dock.propagating.worker is None)
        dock.go_to_frame(min(source + 2, dock.session.shape[0] - 1))
        shoot(viewer, args.out / "guide-propagated.png")

        dock.tabs.setCurrentWidget(dock.finetune)
        dock.finetune.iterations.setValue(args.iterations)
        dock.finetune.val_fraction.setValue(0.25)
        dock.start_finetune()
        wait(lambda: dock.finetune_worker is None)
        shoot(viewer, args.out / "guide-finetune.png")  # the model history list included
        print("verified frames:", dock.session.state.verified,
              "labels changed:", int(np.count_nonzero(labels.data)))
        dock.shutdown()
        viewer.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
