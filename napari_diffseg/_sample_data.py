"""npe2 sample-data hook: File ▸ Open Sample ▸ napari-diffseg ▸ Synthetic coronary angiogram."""

from __future__ import annotations

from napari_diffseg._layers import LayerData, labels_layer_kwargs
from napari_diffseg.data import SyntheticConfig, generate_sequence

SAMPLE_CONFIG = SyntheticConfig(size=512, frames=40, seed=7, difficulty=0.5, guidewire=True)


def synthetic_angiogram() -> list[LayerData]:
    """A generated 512×512, 40-frame coronary angiogram with its ground-truth labels."""
    seq = generate_sequence(SAMPLE_CONFIG, name="synthetic angiogram")
    metadata = {
        "source": "napari-diffseg synthetic generator",
        "source_format": "synthetic",
        "frame_names": [f"{i:05d}" for i in range(seq.frames.shape[0])],
        "fps": seq.fps,
        "classes": dict(seq.classes),
        "labelled": list(range(seq.frames.shape[0])),
        "sequence": "synthetic",
        "generator": {"size": 512, "frames": 40, "seed": 7, "difficulty": 0.5},
    }
    image = (seq.frames, {"name": "synthetic angiogram", "metadata": metadata}, "image")
    max_id = int(seq.labels.max())
    labels_kwargs = labels_layer_kwargs("synthetic angiogram labels", seq.classes, max_id, metadata)
    return [image, (seq.labels, labels_kwargs, "labels")]
