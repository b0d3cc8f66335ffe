"""Every model fine-tuned or adapted in an annotation project, kept with where it came from.

The models live in the project folder (``<video>.diffseg/models/``), one checkpoint and one
JSON record per model::

    models/model-001.pt      the weights (written by the fine-tuning process)
    models/model-001.json    parent model, verified frames and options it was trained on,
                             validation Dice before and after, iterations, time

Nothing is ever overwritten: each run gets the next free id, so rolling back is choosing an
earlier model again. A checkpoint without a record (a project made before the history, whose
single ``finetuned.pt`` was overwritten by each run) is listed with what its file tells: its
name and time. Also :func:`provenance`, the small JSON that exports carry: which model (or
propagation, or the user) made each frame's labels, and the models involved.

Plain JSON and paths: no torch, Qt or napari.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Iterable
from pathlib import Path

from ._atomic import atomic_path
from .errors import WriteError

logger = logging.getLogger(__name__)

MODELS_DIR = "models"
MODEL_PREFIX = "model-"
BUNDLED_NAME = "bundled"
_ID = re.compile(rf"^{MODEL_PREFIX}(\d+)$")


@dataclasses.dataclass
class ModelRecord:
    """One model of the history.

    id: its name in the project ("model-003"), the stem of its files; kind: "finetune",
    "adapt" or "unknown" (a checkpoint found without a record); parent: the model it started
    from (an id of this history, "bundled", a checkpoint path, or None for a new model);
    verified: the verified frames at the start (ground truth); held_out: those of them used
    only to measure the validation Dice; options: the training options; val_dice: best
    validation Dice reached (None without validation); val_dice_before: the parent's Dice on
    the same frames; iterations: iterations run; refit_iterations: iterations of the last
    stage that then trained the chosen weights on every verified frame, the held-out ones
    included (0: none); stopped: the user stopped it early;
    created: seconds since the epoch.
    """

    id: str
    kind: str = "finetune"
    parent: str | None = None
    verified: list[int] = dataclasses.field(default_factory=list)
    held_out: list[int] = dataclasses.field(default_factory=list)
    options: dict = dataclasses.field(default_factory=dict)
    val_dice: float | None = None
    val_dice_before: float | None = None
    iterations: int | None = None
    refit_iterations: int = 0
    stopped: bool = False
    created: float = 0.0
    video: str = ""

    @classmethod
    def from_json(cls, data: dict) -> ModelRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for a list: "model-002 · fine-tune of model-001 · Dice 0.71 · 14:02"."""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created)) \
            if self.created else "?"
        kind = {"finetune": "fine-tune", "adapt": "adapted"}.get(self.kind, "model")
        parts = [self.id, f"{kind} of {self.parent or 'a new model'}"]
        if self.val_dice is not None:
            parts.append(f"Dice {self.val_dice:.2f}")
        if self.verified:
            parts.append(f"{len(self.verified)} verified")
        parts.append(when)
        return " · ".join(parts)


def models_dir(project_dir: str | Path) -> Path:
    return Path(project_dir) / MODELS_DIR


def model_file(project_dir: str | Path, model_id: str) -> Path:
    return models_dir(project_dir) / f"{model_id}.pt"


def next_model_id(project_dir: str | Path) -> str:
    """The next free id ("model-001", "model-002", …): one past the highest on disk."""
    folder = models_dir(project_dir)
    numbers = [0]
    if folder.is_dir():
        for path in folder.iterdir():
            match = _ID.match(path.stem.split(".")[0])
            if match:
                numbers.append(int(match.group(1)))
    return f"{MODEL_PREFIX}{max(numbers) + 1:03d}"


def record_model(project_dir: str | Path, record: ModelRecord) -> Path:
    """Write ``models/<id>.json`` (atomically); returns its path."""
    return record_model_at(model_file(project_dir, record.id), record)


def record_model_at(checkpoint: str | Path, record: ModelRecord) -> Path:
    """Write `record` next to `checkpoint` (``x.pt`` -> ``x.json``, atomically)."""
    folder = Path(checkpoint).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"{folder}: cannot create the models folder ({exc})",
                         path=folder) from exc
    if not record.created:
        record.created = time.time()
    path = Path(checkpoint).with_suffix(".json")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record.to_json(), indent=1))
    logger.info("recorded model %s in %s", record.id, folder)
    return path


def list_models(project_dir: str | Path) -> list[ModelRecord]:
    """The models of the project, oldest first: every ``<id>.pt`` with its record (a
    checkpoint without one is listed as kind "unknown"; a record whose checkpoint is gone is
    left out). Periodic saves (``*.last.pt``) are not models of their own."""
    folder = models_dir(project_dir)
    if not folder.is_dir():
        return []
    records = []
    for pt in folder.glob("*.pt"):
        if pt.stem.endswith(".last") or pt.name.startswith("."):
            continue
        meta = pt.with_suffix(".json")
        record = None
        if meta.is_file():
            try:
                record = ModelRecord.from_json(json.loads(meta.read_text()))
                record.id = pt.stem
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("%s: unreadable model record (%s); listing the checkpoint "
                               "without it", meta, exc)
        if record is None:
            record = ModelRecord(id=pt.stem, kind="unknown", created=pt.stat().st_mtime)
        records.append(record)
    return sorted(records, key=lambda r: (r.created, r.id))


def find_model(project_dir: str | Path, model_id: str) -> ModelRecord | None:
    return next((r for r in list_models(project_dir) if r.id == model_id), None)


def model_name(path: str | Path | None, project_dir: str | Path | None = None,
               bundled: str | Path | None = None) -> str | None:
    """How a checkpoint is named in the project state and the history: its id if it lies in
    the project's models folder, "bundled" for the packaged model, else its path."""
    if path is None:
        return None
    path = Path(path)
    if bundled is None:
        from napari_diffseg.models import DEFAULT_MODEL as bundled
    if _same(path, Path(bundled)):
        return BUNDLED_NAME
    if project_dir is not None and _same(path.parent, models_dir(project_dir)):
        return path.stem
    return str(path)


def model_path_for(name: str | None, project_dir: str | Path,
                   bundled: str | Path | None = None) -> Path | None:
    """The checkpoint a :func:`model_name` names (None for None or an unknown name)."""
    if not name:
        return None
    if name == BUNDLED_NAME:
        if bundled is None:
            from napari_diffseg.models import DEFAULT_MODEL as bundled
        return Path(bundled)
    candidate = model_file(project_dir, name)
    if candidate.is_file():
        return candidate
    path = Path(name)
    return path if path.suffix == ".pt" else None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def lineage(records: Iterable[ModelRecord], model_id: str | None) -> list[str]:
    """`model_id` and its ancestors in the history, newest first (stops at a model outside
    the history, which is included)."""
    by_id = {r.id: r for r in records}
    chain: list[str] = []
    while model_id and model_id not in chain:
        chain.append(model_id)
        model_id = by_id[model_id].parent if model_id in by_id else None
    return chain


def provenance(state, project_dir: str | Path | None = None,
               frames: Iterable[int] | None = None) -> dict:
    """The provenance an export carries: for each exported frame (default all) its name,
    status and who made its labels; the current model; and the history records of every
    model named there, with their ancestors. state: a
    :class:`~napari_diffseg.io.project.ProjectState`."""
    from napari_diffseg import __version__

    indices = range(state.shape[0]) if frames is None else sorted({int(i) for i in frames})
    rows = [{"frame": int(i), "name": state.frame_names[i], "status": state.status(i),
             "labels_from": state.label_source[i]} for i in indices]
    records = list_models(project_dir) if project_dir is not None else []
    current = model_name(state.model, project_dir)
    named = {r["labels_from"] for r in rows} | {current}
    used: list[str] = []
    for name in named:
        for model_id in lineage(records, name):
            if model_id not in used:
                used.append(model_id)
    by_id = {r.id: r for r in records}
    return {
        "napari_diffseg": __version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "video": state.video,
        "sequence": state.sequence,
        "current_model": current,
        "frames": rows,
        "models": [by_id[i].to_json() for i in sorted(used) if i in by_id],
    }


def provenance_path(export: str | Path, sequence: str | None = None) -> Path:
    """Where an export's provenance goes: ``<root>/<sequence>.provenance.json`` next to a
    dataset's folders, ``<file stem>.provenance.json`` next to a TIFF."""
    export = Path(export)
    if sequence is not None:
        return export / f"{sequence}.provenance.json"
    return export.with_name(f"{export.stem}.provenance.json")


def write_provenance(path: str | Path, record: dict) -> Path:
    """Write a :func:`provenance` record as JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return path
