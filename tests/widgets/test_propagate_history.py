"""The dock: propagate a verified frame to its neighbours; keep, switch and roll back models."""

from __future__ import annotations

import json
import shutil

import numpy as np
from conftest import labels_of
from test_workflow import _dock, _segment

from napari_diffseg.io.model_history import ModelRecord, record_model
from napari_diffseg.widgets._propagate_control import KEY_PROPAGATE

WAIT_MS = 60_000


def _dice(a, b):
    a, b = a > 0, b > 0
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def _verify(viewer, dock, truth, frames):
    labels = labels_of(viewer, "run1")
    for frame in frames:
        labels.paint((frame, 1, 1), 1 if truth[frame, 1, 1] == 0 else 0)  # a real stroke
        labels.data[frame] = truth[frame]  # and the corrected frame: the true labels
        dock.toggle_verified(frame)


def test_propagate_button_puts_propagated_labels_in_the_viewer(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint, notifications
):
    path, _, truth = video_file
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    _segment(qtbot, dock)
    _verify(viewer, dock, truth, [3, 5])
    layer = labels_of(viewer, "run1")
    model_labels = np.array(layer.data)
    unc_before = np.array(viewer.layers["run1 uncertainty"].data)
    # not from an unverified frame
    dock.go_to_frame(2)
    assert dock.propagating.start() is None
    assert any("not verified" in m for s, m in notifications if s == "warning")
    dock.go_to_frame(3)
    dock.propagating.panel.frames.setValue(2)
    dock.propagating.panel.button.click()
    qtbot.waitUntil(lambda: dock.propagating.worker is None, timeout=WAIT_MS)
    state = dock.session.state
    # 1, 2 back and 4 forward; 5 is verified: never changed, and the chain goes on past it
    assert state.propagated == [1, 2, 4]
    np.testing.assert_array_equal(layer.data[5], truth[5])
    np.testing.assert_array_equal(layer.data[3], truth[3])
    assert np.array_equal(layer.data[0], model_labels[0])  # out of reach
    assert [state.label_source[i] for i in (2, 3, 4)] == ["propagated", "user", "propagated"]
    statuses = dict(dock.review.rows())
    assert statuses[2] == statuses[4] == "propagated" and statuses[5] == "verified"
    # the untrained model is unsure: the propagated labels follow the corrected frame
    assert _dice(layer.data[4], truth[4]) > _dice(model_labels[4], truth[4])
    unc = viewer.layers["run1 uncertainty"].data
    assert (unc[4] <= unc_before[4] + 1e-6).all()
    assert "propagated to 3 frames" in dock.propagating.panel.status.text()
    # saved: the state on disk says so
    dock.save_now()
    saved = json.loads((path.parent / "run1.diffseg" / "state.json").read_text())
    assert saved["propagated"] == [1, 2, 4]
    # the key is bound on the viewer
    assert KEY_PROPAGATE == "J" and "J" in {str(k) for k in viewer.keymap}


def test_models_are_listed_switched_rolled_back_and_named_in_the_provenance(
    make_napari_viewer, qtbot, video_file, tiny_checkpoint, notifications
):
    path, _, truth = video_file
    project = path.parent / "run1.diffseg"
    (project / "models").mkdir(parents=True)
    for model_id, parent, created in (("model-001", str(tiny_checkpoint), 10.0),
                                      ("model-002", "model-001", 20.0)):
        shutil.copy(tiny_checkpoint, project / "models" / f"{model_id}.pt")
        record_model(project, ModelRecord(id=model_id, parent=parent, verified=[0],
                                          val_dice=0.5, created=created))
    viewer = make_napari_viewer()
    dock = _dock(viewer, path, tiny_checkpoint)
    history = dock.history
    items = [history.panel.models.item(i).data(0x0100)
             for i in range(history.panel.models.count())]
    assert items == ["model-002", "model-001", "bundled"]
    assert dock.finetune.output.text() == str(project / "models" / "model-003.pt")
    # switch to the newest model and segment with it
    history.panel.models.setCurrentRow(0)
    history.panel.use_button.click()
    assert dock.model_edit.text() == str(project / "models" / "model-002.pt")
    _segment(qtbot, dock)
    _verify(viewer, dock, truth, [0])
    state = dock.session.state
    assert state.label_source[0] == "user"
    assert set(state.label_source[1:]) == {"model-002"}
    # roll back: the earlier model is current again; the labels model-002 made still say so
    assert history.rollback() == "model-001"
    assert dock.model_edit.text() == str(project / "models" / "model-001.pt")
    assert history.current() == "model-001"
    assert set(state.label_source[1:]) == {"model-002"}
    out = dock.export("tiff", path.parent / "labels.tif")
    record = json.loads((path.parent / "labels.provenance.json").read_text())
    assert out is not None and record["frames"][3]["labels_from"] == "model-002"
    assert {m["id"] for m in record["models"]} >= {"model-001", "model-002"}
    # re-segmenting touches only the unverified frames, now with model-001
    frame0 = np.array(labels_of(viewer, "run1").data[0])
    _segment(qtbot, dock, "unverified")
    assert state.label_source[0] == "user" and set(state.label_source[1:]) == {"model-001"}
    np.testing.assert_array_equal(labels_of(viewer, "run1").data[0], frame0)
    dock.save_now(force=True)
    saved = json.loads((project / "state.json").read_text())
    assert saved["settings"]["current_model"] == "model-001"
    # a fine-tuning run that ends is recorded next to its checkpoint and becomes current
    output = project / "models" / "model-003.pt"
    history.started("finetune", dock.model_path(), output, [0], {"iterations": 3}, 0.0)
    shutil.copy(tiny_checkpoint, output)
    dock._on_finetune_event({"kind": "done", "path": str(output), "stopped": False,
                             "metrics": {"iterations": 3}, "best_val_dice": None,
                             "val_dice_before": None})
    record = json.loads((project / "models" / "model-003.json").read_text())
    assert record["parent"] == "model-001" and record["verified"] == [0]
    assert record["iterations"] == 3 and record["created"] > 0
    assert history.current() == "model-003"
    assert dock.finetune.output.text() == str(project / "models" / "model-004.pt")
    # a run whose best held-out Dice is below its starting model's is listed, not used
    output = project / "models" / "model-004.pt"
    history.started("finetune", dock.model_path(), output, [0], {"iterations": 3}, 0.25)
    shutil.copy(tiny_checkpoint, output)
    dock._on_finetune_event({"kind": "done", "path": str(output), "stopped": False,
                             "metrics": {"iterations": 3}, "best_val_dice": 0.55,
                             "val_dice_before": 0.73})
    assert (project / "models" / "model-004.json").is_file()
    assert history.current() == "model-003"
    assert dock.model_edit.text().endswith("model-003.pt")
    assert any(severity == "warning" and "scores lower on the held-out frames" in message
               for severity, message in notifications)
    items = [history.panel.models.item(i).data(0x0100)
             for i in range(history.panel.models.count())]
    assert "model-004" in items
