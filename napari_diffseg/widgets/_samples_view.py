"""*Show K samples*: the K diffusion samples of the frame on screen, side by side to the right
of the frame, as one Labels layer ``<video> samples`` in the classes' colours. Where they
differ is what the (mutual-information) uncertainty measures; seeing them tells a user whether
a doubtful vessel is "there or not" or just a border that wobbles. Recomputed in a worker when
the frame changes while the box is ticked; the layer goes when the box is cleared."""

from __future__ import annotations

import numpy as np
from napari.qt.threading import create_worker

from napari_diffseg._layers import labels_layer_kwargs

#: background columns between two samples
GAP = 4


def samples_job(model_path: str, frames: np.ndarray, frame: int, device: str, steps: int,
                samples: int) -> tuple[int, np.ndarray, dict[int, str]]:
    """(frame, (K, H, W) uint8 sample labels, classes) of `frame` (runs in a worker)."""
    from napari_diffseg.engine.inference import SegmentOptions, frame_samples, load_for_inference

    model, ckpt = load_for_inference(model_path, device)
    labels = frame_samples(model, frames, frame, normalisation=ckpt.normalisation,
                           timesteps=int(ckpt.schedule.get("timesteps", 10)),
                           options=SegmentOptions(steps=steps, samples=samples))
    return frame, labels, {int(k): v for k, v in ckpt.classes.items()}


def tile(samples: np.ndarray, gap: int = GAP) -> np.ndarray:
    """(K, H, W) -> (H, K W + (K − 1) gap): the samples left to right, background between."""
    k, h, w = samples.shape
    out = np.zeros((h, k * w + (k - 1) * gap), dtype=samples.dtype)
    for i in range(k):
        out[:, i * (w + gap) : i * (w + gap) + w] = samples[i]
    return out


class SamplesView:
    """Drives the *Show K samples* check box of the review panel for `dock`."""

    def __init__(self, dock, checkbox) -> None:
        self.dock = dock
        self.checkbox = checkbox
        self.worker = None
        self.shown_frame: int | None = None
        self._pending: int | None = None
        checkbox.toggled.connect(self._toggled)
        dock.viewer.dims.events.current_step.connect(self._frame_changed)

    @property
    def layer_name(self) -> str | None:
        session = self.dock.session
        return None if session is None else f"{session.name} samples"

    def _toggled(self, on: bool) -> None:
        if on:
            self.show(self.dock.current_frame())
        else:
            self.hide()

    def _frame_changed(self, _event=None) -> None:
        if self.checkbox.isChecked() and self.dock.current_frame() != self.shown_frame:
            self.show(self.dock.current_frame())

    def hide(self) -> None:
        name = self.layer_name
        if name is not None and name in self.dock.viewer.layers:
            self.dock.viewer.layers.remove(name)
        self.shown_frame = None

    def show(self, frame: int):
        """Start computing `frame`'s samples (one at a time: a request during a run waits)."""
        session = self.dock.session
        if session is None:
            return None
        if self.worker is not None:
            self._pending = frame
            return self.worker
        self.worker = create_worker(
            samples_job, self.dock.model_path(), session.frames, frame,
            self.dock.device_combo.currentData() or "auto", self.dock.steps_spin.value(),
            self.dock.samples_spin.value(), _start_thread=False,
            _connect={"returned": self._on_result, "finished": self._on_finished,
                      "errored": self._on_error},
        )
        self.worker.start()
        return self.worker

    def _on_finished(self) -> None:
        self.worker = None
        pending, self._pending = self._pending, None
        if pending is not None and self.checkbox.isChecked() and pending != self.shown_frame:
            self.show(pending)

    def _on_error(self, exc: Exception) -> None:
        self.dock.notify_info(f"could not draw the samples: {exc}")

    def _on_result(self, result) -> None:
        frame, samples, classes = result
        if not self.checkbox.isChecked() or self.dock.session is None:
            return
        viewer, name = self.dock.viewer, self.layer_name
        data = tile(samples)
        w = samples.shape[-1]
        image = self.dock.session.image
        scale = tuple(image.scale[-2:]) if image is not None else (1.0, 1.0)
        translate = (0.0, (w + GAP) * scale[1])
        if name in viewer.layers:
            layer = viewer.layers[name]
            layer.data, layer.translate, layer.scale = data, translate, scale
        else:
            kwargs = labels_layer_kwargs(name, classes, int(max(classes, default=0)),
                                         {"napari-diffseg": {"role": "samples"}})
            layer = viewer.add_labels(data, translate=translate, scale=scale, **kwargs)
            viewer.layers.selection.active = self.dock.session.labels_layer
        layer.metadata["frame"] = frame
        self.shown_frame = frame
