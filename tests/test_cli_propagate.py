"""`napari-diffseg propagate` and `models` on a video's annotation project, headless."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile

from napari_diffseg.cli import main
from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.io.model_history import ModelRecord, record_model
from napari_diffseg.io.project import ProjectState, load_project, save_project

CLASSES = {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}


@pytest.fixture
def project(tmp_path):
    """A 64 px, 8-frame TIFF video and its project: frame 3 verified with the true labels,
    frame 6 painted, every frame 'segmented' by a model that found nothing and is unsure."""
    seq = generate_sequence(SyntheticConfig(size=64, frames=8, seed=3))
    video = tmp_path / "run1.tif"
    tifffile.imwrite(video, seq.frames)
    labels = np.zeros_like(seq.labels)
    labels[3] = seq.labels[3]
    labels[6, :4, :4] = 1
    state = ProjectState(video=str(video), sequence="run1", shape=seq.labels.shape,
                         classes=CLASSES, verified=[3], edited=[3, 6],
                         segmented=list(range(8)), frame_scores=[1.0] * 8)
    folder = tmp_path / "run1.diffseg"
    save_project(folder, state, labels,
                 np.full(seq.labels.shape, math.log(4), np.float32))
    return video, folder, seq.labels, labels


def test_propagate_writes_propagated_frames_into_the_project(project, capsys):
    video, folder, truth, before = project
    assert main(["propagate", str(video), "--frames", "3", "--method", "ilk"]) == 0
    assert "propagated 1 frame(s) to 5 frames [0, 1, 2, 4, 5]" in capsys.readouterr().out
    state, labels, unc = load_project(folder)
    assert state.propagated == [0, 1, 2, 4, 5]
    assert [state.label_source[i] for i in range(8)] == \
        ["propagated"] * 3 + [None] + ["propagated"] * 2 + [None, None]
    np.testing.assert_array_equal(labels[3], before[3])  # verified: never changed
    np.testing.assert_array_equal(labels[6], before[6])  # painted: never changed
    assert (labels[4] > 0).sum() > 0.5 * (truth[4] > 0).sum()
    assert state.status(4) == "propagated" and state.status(3) == "verified"


def test_propagate_refuses_an_unverified_frame(project, capsys):
    video, folder, _, _ = project
    assert main(["propagate", str(video), "--from", "2"]) == 2
    assert "not verified" in capsys.readouterr().err
    assert load_project(folder)[0].propagated == []


def test_models_lists_the_history(project, capsys):
    video, folder, _, _ = project
    assert main(["models", str(video)]) == 0
    assert "no models" in capsys.readouterr().out
    (folder / "models").mkdir()
    (folder / "models" / "model-001.pt").write_bytes(b"w")
    record_model(folder, ModelRecord(id="model-001", parent="bundled", val_dice=0.61,
                                     verified=[3], created=5.0))
    assert main(["models", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "model-001" in out and "of bundled" in out and "Dice 0.61" in out
