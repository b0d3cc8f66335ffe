"""The annotation project of one video: the user's labels, verified frames and uncertainty.

A project lives in a folder next to the video (``<video stem>.diffseg/``; for a sequence inside
a DAVIS/MOSXAV dataset, ``<dataset root>/<sequence>.diffseg/``) and holds::

    state.json                     what the widgets share: verified, edited and propagated frames,
                                   frame and per-class uncertainty scores, model, which model (or
                                   "propagated", or "user") made each frame's labels, settings
                                   (written last)
    Annotations/<sequence>/*.png   the verified frames as DAVIS palette PNGs (+ classes.json)
    labels.npz                     the whole working label volume (T, H, W) uint8: model
                                   proposals and every correction, verified or not
    uncertainty.npz                the per-pixel uncertainty (T, H, W) float16, if segmented
    models/                        every model fine-tuned or adapted here, ``<id>.pt`` with
                                   ``<id>.json`` (see :mod:`.model_history`)

Every file is replaced atomically, so a crash mid-save leaves the previous save readable; the
temporary files a killed save leaves are removed when the project is opened next.
Numpy only: no torch, Qt or napari.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import atomic_path, remove_stale_temps
from .detect import SEQUENCE_PARENTS
from .errors import ReadError, WriteError
from .writers import write_annotations

logger = logging.getLogger(__name__)

PROJECT_SUFFIX = ".diffseg"
STATE_FILE = "state.json"
LABELS_FILE = "labels.npz"
UNCERTAINTY_FILE = "uncertainty.npz"
STATE_VERSION = 1
#: label_source values other than a model's name
SOURCE_PROPAGATED = "propagated"
SOURCE_USER = "user"


@dataclass
class ProjectState:
    """Serialisable state of the annotation of one video.

    shape: (T, H, W) of the video; frame_names: T stems used for the annotation PNGs;
    verified: frames whose labels the user confirmed (the ground truth for fine-tuning);
    edited: frames the user painted on (never overwritten by a new segmentation);
    segmented: frames that hold a model proposal; frame_scores: T uncertainty scores (None
    where not segmented); class_scores: T rows of C per-class scores (None entries unknown);
    model: the checkpoint that made the proposals ("bundled" for the packaged model);
    propagated: frames whose labels were propagated from a verified neighbour (not verified);
    label_source: T entries, who made each frame's current labels: a model (its history id,
    "bundled", or a checkpoint path), "propagated", "user", or None (nothing yet).

    Projects written before ``propagated`` and ``label_source`` existed open with them empty.
    """

    video: str = ""
    sequence: str = "video"
    shape: tuple[int, int, int] = (0, 0, 0)
    frame_names: list[str] = field(default_factory=list)
    classes: dict[int, str] = field(default_factory=dict)
    verified: list[int] = field(default_factory=list)
    edited: list[int] = field(default_factory=list)
    segmented: list[int] = field(default_factory=list)
    frame_scores: list[float | None] = field(default_factory=list)
    class_scores: list[list[float | None]] | None = None
    model: str | None = None
    propagated: list[int] = field(default_factory=list)
    label_source: list[str | None] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    saved_at: float = 0.0
    version: int = STATE_VERSION

    def __post_init__(self) -> None:
        self.shape = tuple(int(v) for v in self.shape)
        self.classes = {int(k): str(v) for k, v in self.classes.items()}
        t = self.shape[0]
        if not self.frame_names:
            self.frame_names = [f"{i:05d}" for i in range(t)]
        if not self.frame_scores:
            self.frame_scores = [None] * t
        for name in ("verified", "edited", "segmented", "propagated"):
            setattr(self, name, sorted({int(i) for i in getattr(self, name)}))
        sources = [None if s is None else str(s) for s in self.label_source][:t]
        self.label_source = sources + [None] * (t - len(sources))

    def to_json(self) -> dict:
        data = asdict(self)
        data["classes"] = {str(k): v for k, v in self.classes.items()}
        data["shape"] = list(self.shape)
        return data

    @classmethod
    def from_json(cls, data: dict) -> ProjectState:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def status(self, frame: int) -> str:
        """"verified" beats "edited" (painted) beats "propagated" beats "proposed" (the
        model's); "-" for a frame with no labels yet."""
        if frame in self.verified:
            return "verified"
        if frame in self.edited:
            return "edited"
        if frame in self.propagated:
            return "propagated"
        if frame in self.segmented:
            return "proposed"
        return "-"

    def set_source(self, frame: int, source: str | None) -> None:
        """Record who made `frame`'s current labels; a source other than "propagated" takes
        the frame out of the propagated ones."""
        frame = int(frame)
        self.label_source[frame] = source
        if source == SOURCE_PROPAGATED:
            if frame not in self.propagated:
                self.propagated = sorted({*self.propagated, frame})
        elif frame in self.propagated:
            self.propagated = [i for i in self.propagated if i != frame]

    def ranking(self, unverified_only: bool = False) -> list[int]:
        """Frame indices from most to least uncertain (frames without a score last)."""
        frames = [i for i in range(self.shape[0])
                  if not (unverified_only and i in self.verified)]
        scored = [i for i in frames if self.frame_scores[i] is not None]
        unscored = [i for i in frames if self.frame_scores[i] is None]
        return sorted(scored, key=lambda i: -float(self.frame_scores[i])) + unscored


#: Image-layer metadata key naming the project folder to use instead of the one beside the
#: video (the demo keeps the work on its bundled sample out of the repository's sample_data/).
PROJECT_DIR_KEY = "diffseg_project_dir"


def user_projects_dir() -> Path:
    """Where projects go that have no folder beside their video: $NAPARI_DIFFSEG_HOME, else
    ~/napari-diffseg."""
    home = os.environ.get("NAPARI_DIFFSEG_HOME")
    return Path(home).expanduser() if home else Path.home() / "napari-diffseg"


def project_dir_for(source: str | Path, sequence: str | None = None) -> Path:
    """The project folder of a video file or frame folder (see the module docstring)."""
    source = Path(source)
    if source.parent.name in SEQUENCE_PARENTS:  # <root>/JPEGImages/<seq>
        return source.parent.parent / f"{sequence or source.name}{PROJECT_SUFFIX}"
    if source.is_dir() and sequence and (source / "JPEGImages").is_dir():  # a dataset root
        return source / f"{sequence}{PROJECT_SUFFIX}"
    stem = source.stem if source.suffix and not source.is_dir() else source.name
    return source.parent / f"{stem}{PROJECT_SUFFIX}"


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def save_project(
    folder: str | Path,
    state: ProjectState,
    labels: np.ndarray | None,
    uncertainty: np.ndarray | None = None,
    *,
    changed: list[int] | None = None,
) -> Path:
    """Write the project into `folder` (created if needed); returns the state file.

    labels: (T, H, W) integer ids in 0..255, the working label volume; None keeps the saved
    one. uncertainty: (T, H, W) float, None keeps the saved one. The verified frames are
    (re)written as Annotations/<sequence>/<frame name>.png and annotations of frames that are
    no longer verified are removed; with `changed` given, only those verified frames (and any
    whose PNG is missing) are rewritten. state.json is written last.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(
            f"{folder}: cannot create the project folder ({exc})", path=folder
        ) from exc
    t = state.shape[0]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != tuple(state.shape):
            raise WriteError(
                f"{folder}: labels have shape {labels.shape}, the video is {tuple(state.shape)}",
                path=folder,
            )
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise WriteError(f"{folder}: label ids must be in 0..255", path=folder)
        labels = labels.astype(np.uint8, copy=False)
        _save_npz(folder / LABELS_FILE, labels=labels)
        ann_dir = folder / "Annotations" / state.sequence
        keep = {f"{state.frame_names[i]}.png" for i in state.verified if i < t}
        todo = [i for i in state.verified if i < t and (
            changed is None or i in changed
            or not (ann_dir / f"{state.frame_names[i]}.png").is_file())]
        if todo:
            write_annotations(ann_dir, labels, frame_names=state.frame_names, frames=todo)
        if state.verified:
            if state.classes:
                with atomic_path(folder / "Annotations" / "classes.json") as tmp:
                    tmp.write_text(json.dumps({str(k): v for k, v in state.classes.items()},
                                              indent=1))
        if ann_dir.is_dir():
            for png in ann_dir.glob("*.png"):
                if png.name not in keep:
                    png.unlink()
    if uncertainty is not None:
        uncertainty = np.asarray(uncertainty)
        if uncertainty.shape != tuple(state.shape):
            raise WriteError(
                f"{folder}: uncertainty has shape {uncertainty.shape}, "
                f"the video is {tuple(state.shape)}",
                path=folder,
            )
        _save_npz(folder / UNCERTAINTY_FILE, uncertainty=uncertainty.astype(np.float16))
    state.saved_at = time.time()
    target = folder / STATE_FILE
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(state.to_json(), indent=1))
    logger.debug("saved project %s (%d verified frames)", folder, len(state.verified))
    return target


def _load_npz(path: Path, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            array = data[key]
    except (OSError, ValueError, KeyError) as exc:
        raise ReadError(f"{path}: unreadable project file ({exc})", path=path) from exc
    if array.shape != shape:
        raise ReadError(
            f"{path}: holds shape {array.shape} but the video is {shape}; "
            "the project belongs to another video",
            path=path,
        )
    return array


def clean_project_folder(folder: str | Path) -> list[Path]:
    """Remove what interrupted saves left in a project folder: our stale temporary files
    (see :func:`napari_diffseg.io.remove_stale_temps`), at any depth. Returns them."""
    folder = Path(folder)
    return remove_stale_temps(folder, recursive=True) if folder.is_dir() else []


def has_project(folder: str | Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def load_project(
    folder: str | Path, expected_shape: tuple[int, int, int] | None = None
) -> tuple[ProjectState, np.ndarray | None, np.ndarray | None]:
    """(state, labels (T, H, W) uint8 or None, uncertainty (T, H, W) float16 or None).

    Raises ReadError naming the file if the project is unreadable or was made for a video of
    another shape than `expected_shape`."""
    folder = Path(folder)
    clean_project_folder(folder)
    path = folder / STATE_FILE
    try:
        state = ProjectState.from_json(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise ReadError(f"{path}: no project here", path=path) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise ReadError(f"{path}: not a valid project state ({exc})", path=path) from exc
    if state.version > STATE_VERSION:
        raise ReadError(
            f"{path}: made by a newer napari-diffseg (version {state.version}); update it",
            path=path,
        )
    shape = tuple(state.shape)
    if expected_shape is not None and shape != tuple(expected_shape):
        raise ReadError(
            f"{path}: the project is for a video of shape {shape}, this one is "
            f"{tuple(expected_shape)}",
            path=path,
        )
    labels = _load_npz(folder / LABELS_FILE, "labels", shape)
    uncertainty = _load_npz(folder / UNCERTAINTY_FILE, "uncertainty", shape)
    return state, labels, uncertainty
