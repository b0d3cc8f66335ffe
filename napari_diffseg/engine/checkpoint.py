"""Self-describing model checkpoints: one file with the weights and everything needed to use them.

A checkpoint is a plain dict written with :func:`torch.save` and read back with
``torch.load(..., weights_only=True)``, so it may only hold tensors, dicts, lists, tuples,
str, int, float, bool and None: no dataclass instances, no numpy arrays, nothing that would
need arbitrary code to unpickle. Layout (format version 1)::

    {"format": "napari-diffseg-checkpoint", "format_version": 1,
     "model_config": {...}, "state_dict": {name: tensor}, "classes": {"0": "background", ...},
     "normalisation": {...}, "schedule": {...}, "train_options": {...}, "data_summary": {...},
     "metrics": {...}, "training_state": {...} | None, "library_version": "0.1.0",
     "created": "2025-01-01T00:00:00+00:00"}

Class keys are stored as strings and become ints again on load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_diffseg import __version__
from napari_diffseg.io import WriteError, atomic_path, remove_stale_temps

logger = logging.getLogger(__name__)

FORMAT = "napari-diffseg-checkpoint"
FORMAT_VERSION = 1
REQUIRED_FIELDS = ("model_config", "state_dict", "classes", "normalisation", "schedule")
_DICT_FIELDS = ("train_options", "data_summary", "metrics")


class CheckpointError(ValueError):
    """A checkpoint cannot be written, read or used; the message names the file and why."""


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Checkpoint:
    """Everything a trained model needs, as plain data.

    Attributes:
        model_config: keyword arguments of ``napari_diffseg.model.network.ModelConfig``
            (a ``ModelConfig`` instance is accepted and turned into a dict).
        state_dict: parameter name -> tensor, as from ``model.state_dict()``.
        classes: label value -> class name; 0 is the background.
        normalisation: how frames were normalised, e.g. ``{"method": "percentile",
            "low": 1.0, "high": 99.0}``.
        schedule: diffusion schedule settings, e.g. ``{"timesteps": 10}``.
        train_options: the options training ran with.
        data_summary: what the model was trained on (sequences, frame counts, ...).
        metrics: validation metrics, e.g. ``EvaluationReport.to_dict()``.
        training_state: optimiser / EMA state dicts, iteration, RNG seeds: only to resume.
        library_version: napari-diffseg version that wrote the checkpoint.
        created: ISO 8601 UTC time of creation.
        source: the file it was loaded from (not stored in the file; used in error messages).
    """

    model_config: dict
    state_dict: dict[str, torch.Tensor]
    classes: dict[int, str]
    normalisation: dict
    schedule: dict
    train_options: dict = field(default_factory=dict)
    data_summary: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    training_state: dict | None = None
    library_version: str = __version__
    created: str = field(default_factory=_utc_now)
    source: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if dataclasses.is_dataclass(self.model_config) and not isinstance(self.model_config, type):
            self.model_config = dataclasses.asdict(self.model_config)
        self.classes = {int(label): str(name) for label, name in self.classes.items()}

    def to_payload(self) -> dict[str, Any]:
        """The plain dict written to the file (class keys as str, tensors detached on CPU)."""
        state = {
            str(name): tensor.detach().cpu() if isinstance(tensor, torch.Tensor) else tensor
            for name, tensor in self.state_dict.items()
        }
        payload: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_config": self.model_config,
            "state_dict": state,
            "classes": {str(label): name for label, name in self.classes.items()},
            "normalisation": self.normalisation,
            "schedule": self.schedule,
            "train_options": self.train_options,
            "data_summary": self.data_summary,
            "metrics": self.metrics,
            "training_state": self.training_state,
            "library_version": str(self.library_version),
            "created": str(self.created),
        }
        return {key: _plain(value, key) for key, value in payload.items()}


def _plain(value: Any, where: str) -> Any:
    """``value`` with only types ``weights_only`` loading accepts; raises TypeError otherwise.

    Dataclasses become dicts, paths become str and numpy scalars Python numbers.
    """
    if isinstance(value, np.generic):  # before the Python types: np.float64 is a float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, torch.dtype)):
        return value
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"{where}: key {key!r} ({type(key).__name__}) cannot be stored")
            out[key] = _plain(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    raise TypeError(
        f"{where}: a {kind} cannot be stored in a checkpoint "
        "(use tensors, dicts, lists, str, int, float, bool or None)"
    )


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically and return the path.

    The file is written to a temporary sibling and moved over ``path`` only when complete:
    on any error the temporary file is removed and a previous file at ``path`` is untouched.
    The parent folder is created if needed.

    Raises:
        CheckpointError: a field holds something that cannot be stored, or writing failed.
    """
    path = Path(path)
    try:
        payload = ckpt.to_payload()
    except TypeError as exc:
        raise CheckpointError(f"{path}: checkpoint not written: {exc}") from exc

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temp:
            torch.save(payload, temp)
    except (OSError, WriteError) as exc:
        raise CheckpointError(f"{path}: checkpoint could not be written ({exc})") from exc
    logger.info("saved checkpoint %s (%d tensors)", path, len(payload["state_dict"]))
    return path


def _read(path: Path, map_location: Any) -> Any:
    """``torch.load`` with ``weights_only=True``, every failure turned into CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        code = _refused_code(str(exc))
        if code is not None:
            raise CheckpointError(
                f"{path}: refused because it contains code ({code}): loading it could run "
                "arbitrary programs; a napari-diffseg checkpoint holds only tensors and plain "
                "data (refused to load)"
            ) from exc
        raise CheckpointError(
            f"{path}: checkpoint file is truncated or corrupt "
            f"({_first_line(str(exc), 'unreadable pickle data')})"
        ) from exc
    except PermissionError as exc:
        raise CheckpointError(f"{path}: checkpoint could not be read ({exc})") from exc
    except Exception as exc:  # damaged files: RuntimeError, EOFError, OSError (EINVAL), ...
        raise CheckpointError(
            f"{path}: checkpoint file is truncated or corrupt "
            f"({type(exc).__name__}: {_first_line(str(exc), 'no detail')})"
        ) from exc


#: How torch words a ``weights_only`` refusal of a callable or class, across versions:
#: "Unsupported global: GLOBAL numpy.dtype was not an allowed global by default" (2.4+),
#: "Trying to load unsupported GLOBAL posix.system whose module posix is blocked" (2.6+),
#: "Unsupported class builtins.eval" (older). The name is the code the pickle would call.
_CODE_PATTERNS = (
    re.compile(r"\bGLOBAL\s+([A-Za-z_][\w.]*)"),
    re.compile(r"unsupported (?:global|class)[:\s]+([A-Za-z_][\w.]*)", re.IGNORECASE),
    re.compile(r"(?:module|global) [`'\"]?([A-Za-z_][\w.]*)[`'\"]? is (?:blocked|not allowed)",
               re.IGNORECASE),
)
#: Words of a refusal whose message names no global (REDUCE / BUILD of a non-tensor).
_CODE_WORDS = ("safe_globals", "add_safe_globals", "only build tensor", "reduce")


def average_checkpoints(paths: list[str | os.PathLike[str]]) -> Checkpoint:
    """The mean of the weights of several checkpoints of one architecture (a "model soup").

    Models fine-tuned from the same start lie in one basin of the loss, and the mean of their
    weights often keeps what each learnt. The result carries the last checkpoint's metadata,
    its ``data_summary`` names the averaged files, and it has no training state (the
    optimisers of the parts do not average). Integer tensors must agree.

    Raises:
        CheckpointError: fewer than two files, or the architectures, classes, normalisation
            or weight names differ (the message names the file).
    """
    if len(paths) < 2:
        raise CheckpointError("averaging needs at least two checkpoints")
    ckpts = [load_checkpoint(p) for p in paths]
    first = ckpts[0]
    for ck in ckpts[1:]:
        for what in ("model_config", "classes", "normalisation", "schedule"):
            if getattr(ck, what) != getattr(first, what):
                raise CheckpointError(f"{ck.source}: its {what} differs from that of "
                                      f"{first.source}; only models of one architecture "
                                      "can be averaged")
        if ck.state_dict.keys() != first.state_dict.keys():
            raise CheckpointError(f"{ck.source}: its weights differ in names from those of "
                                  f"{first.source}")
    mean = {}
    for name, tensor in first.state_dict.items():
        parts = [ck.state_dict[name] for ck in ckpts]
        if tensor.is_floating_point():
            mean[name] = (sum(p.double() for p in parts) / len(parts)).to(tensor.dtype)
        else:
            if any(not torch.equal(p, tensor) for p in parts):
                raise CheckpointError(f"{name}: integer weights differ between the checkpoints")
            mean[name] = tensor.clone()
    last = ckpts[-1]
    summary = dict(last.data_summary)
    summary["averaged"] = [Path(p).name for p in paths]
    return dataclasses.replace(last, state_dict=mean, data_summary=summary,
                               training_state=None, metrics={}, created=_utc_now(),
                               source=None)


def _refused_code(message: str) -> str | None:
    """The callable a ``weights_only`` refusal names, "code" if it names none, or None when
    the message is about damaged data rather than code."""
    for pattern in _CODE_PATTERNS:
        found = pattern.search(message)
        if found and found.group(1).upper() != "GLOBAL":
            return found.group(1).rstrip(".")
    lowered = message.lower()
    if any(word in lowered for word in _CODE_WORDS):
        return "code"
    return None


def _first_line(text: str, default: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else default


def _check_payload(path: Path, payload: Any) -> None:
    """Raise CheckpointError unless ``payload`` is a napari-diffseg checkpoint we can read."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: is not a napari-diffseg checkpoint")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: invalid checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        writer = payload.get("library_version", "a newer version")
        raise CheckpointError(
            f"{path}: checkpoint format version {version} (written by napari-diffseg {writer}) "
            f"is newer than this napari-diffseg {__version__} reads (up to version "
            f"{FORMAT_VERSION}); upgrade napari-diffseg to load it"
        )
    missing = [key for key in REQUIRED_FIELDS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is incomplete, missing {', '.join(missing)}")
    for key in ("model_config", "state_dict", "classes", "normalisation", "schedule"):
        if not isinstance(payload[key], dict):
            raise CheckpointError(
                f"{path}: checkpoint field {key!r} should be a dict, "
                f"not {type(payload[key]).__name__}"
            )
    for key in _DICT_FIELDS:
        if not isinstance(payload.get(key, {}), dict):
            raise CheckpointError(f"{path}: checkpoint field {key!r} should be a dict")
    if not isinstance(payload.get("training_state"), (dict, type(None))):
        raise CheckpointError(f"{path}: checkpoint field 'training_state' should be a dict")
    bad = [name for name, value in payload["state_dict"].items() if not torch.is_tensor(value)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entries are not tensors: {', '.join(bad[:5])}")


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu"
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded (as for :func:`torch.load`).

    Raises:
        CheckpointError: naming the file, when it is missing, empty, truncated or corrupt,
            not a napari-diffseg checkpoint, written in a newer format, or incomplete.
    """
    path = Path(path)
    remove_stale_temps(path.parent)  # what killed saves left beside it (never raises)
    payload = _read(path, map_location)
    _check_payload(path, payload)
    try:
        classes = {int(label): str(name) for label, name in payload["classes"].items()}
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint class labels are not integers") from exc
    known = {f.name for f in dataclasses.fields(Checkpoint)} | {"format", "format_version"}
    extra = sorted(set(payload) - known)
    if extra:
        logger.debug("%s: ignoring unknown checkpoint fields %s", path, extra)
    from napari_diffseg.model.network import LEGACY_DEFAULTS, ModelConfig

    config = payload["model_config"]
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    if isinstance(config, dict) and set(config) <= names:
        # fields added to ModelConfig since the file was written keep their old value
        config = {**LEGACY_DEFAULTS, **config}
    classes = _check_classes(path, classes, config)
    ckpt = Checkpoint(
        model_config=config,
        state_dict=payload["state_dict"],
        classes=classes,
        normalisation=payload["normalisation"],
        schedule=payload["schedule"],
        train_options=payload.get("train_options", {}),
        data_summary=payload.get("data_summary", {}),
        metrics=payload.get("metrics", {}),
        training_state=payload.get("training_state"),
        library_version=str(payload.get("library_version", "unknown")),
        created=str(payload.get("created", "")),
        source=path,
    )
    logger.info(
        "loaded checkpoint %s (format %d, napari-diffseg %s, %d classes)",
        path,
        payload["format_version"],
        ckpt.library_version,
        len(classes),
    )
    return ckpt


def _check_classes(path: Path, classes: dict[int, str], config: Any) -> dict[int, str]:
    """The class names of a checkpoint, checked against the network's output classes 0..C-1
    (C = ``model_config["num_classes"]``). Names for outputs that do not exist are refused:
    the file contradicts itself, and a legend would offer classes the model never gives.
    Outputs without a name (files of versions before 0.1.0's check, trained on data that did
    not name every class) are kept, named "class N", with a warning."""
    count = config.get("num_classes") if isinstance(config, dict) else None
    if not isinstance(count, int) or isinstance(count, bool):
        return classes
    unnamed = sorted(set(range(count)) - set(classes))
    extra = sorted(set(classes) - set(range(count)))
    if extra:
        what = [f"names for {extra} match no output"]
        if unnamed:
            what.append(f"outputs {unnamed} have no name")
        raise CheckpointError(
            f"{path}: refused: its class names {dict(sorted(classes.items()))} do not match "
            f"the network's {count} output classes 0..{count - 1} ({'; '.join(what)})"
        )
    if unnamed:
        logger.warning("%s: outputs %s of the network have no class name; shown as "
                       "'class N'", path, unnamed)
        classes = {**classes, **{i: ("background" if i == 0 else f"class {i}")
                                 for i in unnamed}}
    return dict(sorted(classes.items()))


def build_model(ckpt: Checkpoint, device: str | torch.device | None = None) -> torch.nn.Module:
    """The network described by ``ckpt.model_config`` with its weights loaded, in eval mode.

    Args:
        ckpt: a loaded (or freshly made) checkpoint.
        device: move the model there; default: leave it on the CPU.

    Raises:
        CheckpointError: naming the file, when the model config is not understood or the
            weights do not match the architecture it describes.
    """
    from napari_diffseg.model.network import DiffSegNet, ModelConfig

    name = str(ckpt.source) if ckpt.source is not None else "checkpoint"
    try:
        config = ModelConfig(**ckpt.model_config)
        model = DiffSegNet(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{name}: its model_config cannot be used by napari-diffseg {__version__} ({exc})"
        ) from exc
    difference = state_dict_difference(model.state_dict(), ckpt.state_dict)
    if difference:
        raise CheckpointError(
            f"{name}: the weights don't match the architecture described by its model_config: "
            f"{difference}"
        )
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{name}: the weights don't match the architecture described by its model_config "
            f"({_first_line(str(exc), type(exc).__name__)})"
        ) from exc
    if device is not None:
        model = model.to(device)
    model.eval()
    return model


def state_dict_difference(expected: dict[str, Any], found: dict[str, Any], show: int = 3) -> str:
    """One line saying how ``found`` (a file's weights) differs from ``expected`` (the
    network's): counts of missing, unexpected and reshaped tensors with the first ``show`` of
    each; "" when names and shapes agree."""

    def first(names: list[str]) -> str:
        more = f", … {len(names) - show} more" if len(names) > show else ""
        return ", ".join(names[:show]) + more

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [
        f"{k} {tuple(found[k].shape)} in the file, {tuple(expected[k].shape)} in the network"
        for k in expected
        if k in found and hasattr(found[k], "shape")
        and tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({first(unexpected)})")
    if reshaped:
        parts.append(f"{len(reshaped)} of another shape ({first(reshaped)})")
    if not parts:
        return ""
    return (f"{'; '.join(parts)} of {len(expected)} tensors; was it written for another "
            "model_config?")
