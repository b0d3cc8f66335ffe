"""Write synthetic sequences in the exact folder layout of a MOSXAV download."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from .config import SyntheticConfig
from .dataset import sequence_seeds
from .synthetic import generate_sequence

__all__ = ["make_mosxav", "mosxav_split_names"]

logger = logging.getLogger(__name__)

JPEG_QUALITY = 95


def mosxav_split_names(trainval: int) -> tuple[list[int], list[int]]:
    """Indices (into the trainval sequences) of the train and val lists: the last quarter
    (at least one when there are two or more sequences) is validation."""
    n_val = max(1, trainval // 4) if trainval >= 2 else 0
    return list(range(trainval - n_val)), list(range(trainval - n_val, trainval))


def make_mosxav(out: Path | str, *, trainval: int = 4, test: int = 2, frames: int = 20,
                size: int | tuple[int, int] = 128, seed: int = 0, label_every: int = 5,
                encoding: str = "rgb", difficulty: float = 0.5) -> Path:
    """Generate a synthetic dataset shaped exactly like a MOSXAV download; returns ``out``.

    Layout (sequences are named ``v01``, ``v02``, ... across both splits)::

        out/trainval/JPEGImages/vXX/NNNNN.jpg            all T frames (JPEG, quality 95)
        out/trainval/Annotations_Semantic/vXX/NNNNN.png  frames 0, label_every, ...
        out/trainval/ImageSets/{train,val}.txt
        out/trainval/labels.json
        out/test/JPEGImages/vXX/NNNNN.jpg
        out/test/Annotations_Semantic/vXX/NNNNN.png      every frame
        out/test/ImageSets/test.txt
        out/test/labels.json

    Labels use the ``"mosxav"`` scheme (see :class:`SyntheticConfig` and
    :data:`~napari_diffseg.data.config.MOSXAV_SCHEME`): 0 background, 1 vessel, 2 contrast
    catheter (catheter in injection-phase frames, lumen filled with contrast), 3 catheter
    (the same catheter in the other frames, empty lumen), 4 balloon (angioplasty balloon on
    the guidewire's path in about 40 % of the sequences), 5 others (the guidewire); overlaps
    resolve as others > balloon > catheter > vessel. Masks are written by
    :func:`napari_diffseg.io.write_mosxav` with ``encoding`` ``"rgb"`` or ``"index"``.
    """
    from napari_diffseg.io import atomic_path, write_mosxav

    if trainval < 0 or test < 0 or trainval + test < 1:
        raise ValueError(f"need at least one sequence, got trainval={trainval}, test={test}")
    if label_every < 1:
        raise ValueError(f"label_every must be >= 1, got {label_every}")
    if encoding not in ("rgb", "index"):
        raise ValueError(f"encoding must be 'rgb' or 'index', got {encoding!r}")
    out = Path(out)
    seeds = sequence_seeds(seed, trainval + test)
    names = [f"v{i + 1:02d}" for i in range(trainval + test)]
    train, val = mosxav_split_names(trainval)
    plan = [("trainval", names[:trainval], label_every), ("test", names[trainval:], 1)]
    for subset, subset_names, every in plan:
        if not subset_names:
            continue
        root = out / subset
        for name in subset_names:
            config = SyntheticConfig(size=size, frames=frames, seed=seeds[names.index(name)],
                                     difficulty=difficulty, scheme="mosxav")
            seq = generate_sequence(config, name=name)
            frame_names = [f"{t:05d}" for t in range(frames)]
            _write_jpegs(root / "JPEGImages" / name, seq.frames, frame_names)
            write_mosxav(root, name, seq.labels, frame_names=frame_names,
                         frames=range(0, frames, every), encoding=encoding, classes=seq.classes)
            logger.info("wrote MOSXAV %s/%s to %s", subset, name, out)
        lists = ({"train": [subset_names[i] for i in train], "val": [subset_names[i] for i in val]}
                 if subset == "trainval" else {"test": subset_names})
        for split, members in lists.items():
            path = root / "ImageSets" / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as temp:
                temp.write_text("".join(f"{m}\n" for m in members), encoding="utf-8")
    return out


def _write_jpegs(folder: Path, frames, frame_names: list[str]) -> None:
    """Write ``(T, H, W)`` uint8 frames as ``folder/<name>.jpg`` (quality 95)."""
    from napari_diffseg.io import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    for frame, name in zip(frames, frame_names, strict=True):
        with atomic_path(folder / f"{name}.jpg") as temp:
            Image.fromarray(frame).save(temp, format="JPEG", quality=JPEG_QUALITY)
