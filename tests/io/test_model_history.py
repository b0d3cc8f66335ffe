"""Model history and provenance in the annotation project, and old projects still opening."""

from __future__ import annotations

import json

import numpy as np
import tifffile

from napari_diffseg.io import write_davis, write_tiff
from napari_diffseg.io.model_history import (
    ModelRecord,
    lineage,
    list_models,
    model_name,
    model_path_for,
    next_model_id,
    provenance,
    record_model,
)
from napari_diffseg.io.project import ProjectState, load_project, save_project

#: state.json as napari-diffseg wrote it before propagation and the model history existed
OLD_STATE = {
    "video": "/data/run1.mp4", "sequence": "run1", "shape": [3, 6, 8],
    "frame_names": ["00000", "00001", "00002"], "classes": {"0": "background", "1": "vessel"},
    "verified": [1], "edited": [1], "segmented": [0, 1, 2], "frame_scores": [0.2, 0.1, 0.3],
    "class_scores": None, "model": "/old/run1.diffseg/models/finetuned.pt", "settings": {},
    "saved_at": 1.0, "version": 1,
}


def _touch_model(project, model_id, parent, created, dice=None):
    (project / "models").mkdir(parents=True, exist_ok=True)
    (project / "models" / f"{model_id}.pt").write_bytes(b"weights")
    record_model(project, ModelRecord(id=model_id, parent=parent, verified=[1, 4],
                                      options={"iterations": 5}, val_dice=dice,
                                      created=created))


def test_an_old_project_opens_with_empty_provenance(tmp_path):
    project = tmp_path / "run1.diffseg"
    project.mkdir()
    (project / "state.json").write_text(json.dumps(OLD_STATE))
    with open(project / "labels.npz", "wb") as fh:
        np.savez_compressed(fh, labels=np.ones((3, 6, 8), np.uint8))
    (project / "models").mkdir()
    (project / "models" / "finetuned.pt").write_bytes(b"old weights")  # no record
    state, labels, unc = load_project(project, expected_shape=(3, 6, 8))
    assert state.verified == [1] and labels.shape == (3, 6, 8) and unc is None
    assert state.propagated == [] and state.label_source == [None, None, None]
    assert [state.status(i) for i in range(3)] == ["proposed", "verified", "proposed"]
    (old,) = list_models(project)
    assert old.id == "finetuned" and old.kind == "unknown" and old.created > 0
    assert next_model_id(project) == "model-001"
    # saved again, the new fields are written and read back
    state.set_source(2, "propagated")
    save_project(project, state, labels)
    again, _, _ = load_project(project)
    assert again.propagated == [2] and again.label_source == [None, None, "propagated"]
    assert again.status(2) == "propagated"


def test_history_lists_models_oldest_first_with_their_lineage(tmp_path):
    project = tmp_path / "run1.diffseg"
    _touch_model(project, "model-001", "bundled", 10.0, dice=0.4)
    _touch_model(project, "model-002", "model-001", 20.0, dice=0.6)
    (project / "models" / "model-002.last.pt").write_bytes(b"periodic save")
    records = list_models(project)
    assert [r.id for r in records] == ["model-001", "model-002"]
    assert records[1].parent == "model-001" and records[1].verified == [1, 4]
    assert "Dice 0.60" in records[1].describe()
    assert next_model_id(project) == "model-003"
    assert lineage(records, "model-002") == ["model-002", "model-001", "bundled"]
    path = project / "models" / "model-001.pt"
    assert model_name(path, project) == "model-001"
    assert model_path_for("model-001", project) == path
    assert model_name(tmp_path / "elsewhere.pt", project) == str(tmp_path / "elsewhere.pt")


def test_exports_carry_a_provenance_json(tmp_path):
    project = tmp_path / "run1.diffseg"
    _touch_model(project, "model-001", "bundled", 10.0)
    _touch_model(project, "model-002", "model-001", 20.0)
    state = ProjectState(video="run1.mp4", sequence="run1", shape=(3, 6, 8),
                         classes={0: "background", 1: "vessel"}, verified=[0],
                         segmented=[0, 1, 2], model=str(project / "models" / "model-002.pt"))
    state.set_source(0, "user")
    state.set_source(1, "propagated")
    state.set_source(2, "model-002")
    labels = np.zeros((3, 6, 8), np.uint8)
    labels[:, 2:4, 2:6] = 1
    record = provenance(state, project)
    assert record["current_model"] == "model-002"
    assert [f["labels_from"] for f in record["frames"]] == ["user", "propagated", "model-002"]
    assert [f["status"] for f in record["frames"]] == ["verified", "propagated", "proposed"]
    assert [m["id"] for m in record["models"]] == ["model-001", "model-002"]
    out = write_tiff(tmp_path / "labels.tif", labels, provenance=record)
    assert tifffile.imread(out).shape == (3, 6, 8)
    saved = json.loads((tmp_path / "labels.provenance.json").read_text())
    assert saved["frames"][2]["labels_from"] == "model-002"
    root = write_davis(tmp_path / "davis", "run1", labels, frames=[0], classes=state.classes,
                       images=np.zeros((3, 6, 8), np.uint8),
                       provenance=provenance(state, project, [0]))
    exported = json.loads((root / "run1.provenance.json").read_text())
    assert [f["frame"] for f in exported["frames"]] == [0]
