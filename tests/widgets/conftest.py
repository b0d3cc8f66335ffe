"""A small generated angiography video on disk and a tiny untrained checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.data.sequences import DEFAULT_NORMALISATION
from napari_diffseg.engine.checkpoint import Checkpoint, save_checkpoint
from napari_diffseg.model import DiffSegNet, ModelConfig

CLASSES = {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}
TINY = ModelConfig(num_classes=4, width=8, depth=2, label_width=8, label_blocks=1,
                   time_dim=16, denoiser_stride=1, encoder_stride=1)


@pytest.fixture
def video_file(tmp_path):
    """(path of an 8-frame 64x64 uint8 TIFF stack, its frames, its true labels)."""
    seq = generate_sequence(SyntheticConfig(size=64, frames=8, seed=3))
    path = tmp_path / "run1.tif"
    tifffile.imwrite(path, seq.frames)
    return path, seq.frames, seq.labels


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = DiffSegNet(TINY)
    ckpt = Checkpoint(model_config=TINY.to_dict(), state_dict=model.state_dict(),
                      classes=CLASSES, normalisation=dict(DEFAULT_NORMALISATION),
                      schedule={"timesteps": 10})
    return save_checkpoint(tmp_path / "models" / "tiny.pt", ckpt)


@pytest.fixture
def notifications(monkeypatch):
    """Every napari notification the dock shows, as (severity, message)."""
    from napari_diffseg.widgets import _dock

    seen: list[tuple[str, str]] = []
    for name, severity in (("show_error", "error"), ("show_warning", "warning"),
                           ("show_info", "info")):
        original = getattr(_dock, name)

        def record(message, _severity=severity, _original=original):
            seen.append((_severity, str(message)))
            _original(message)

        monkeypatch.setattr(_dock, name, record)
    return seen


def labels_of(viewer, video_name):
    return viewer.layers[f"{video_name} pseudo-labels"]


def as_array(layer):
    return np.asarray(layer.data)
