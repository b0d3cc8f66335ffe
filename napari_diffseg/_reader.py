"""npe2 reader hook: File ▸ Open and drag-and-drop for every format `napari_diffseg.io` reads."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from napari_diffseg._layers import LayerData, video_to_layers
from napari_diffseg.io import ReadError, detect_format, read_sequences

logger = logging.getLogger(__name__)


#: Folders that are array stores, never frame folders or datasets: declined without listing
#: them (npe2 offers every directory reader for every folder; a store has many chunk files).
STORE_SUFFIXES = frozenset({".zarr", ".n5", ".h5", ".hdf5"})


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return a reader when every path is a format we read, else None (napari tries others).

    Cheap for what we do not read: a file by its extension (extension-less files by the
    DICM marker in their first 132 bytes), an array store folder by its name."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or any(Path(p).suffix.lower() in STORE_SUFFIXES for p in paths):
        return None
    if any(detect_format(p) is None for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read each path into layer-data tuples. A DAVIS or MOSXAV root with several sequences
    opens all of them, only the first one visible. Bad input raises
    `napari_diffseg.io.ReadError` with its :meth:`~napari_diffseg.io.ReadError.summary` as
    the message (problem first, then the file's name), which napari shows as a notification
    (File ▸ Open) and the dock shows as it is (its Open… button)."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        try:
            videos = read_sequences(p)
        except ReadError as exc:
            raise ReadError(exc.summary(), path=exc.path) from exc
        for i, video in enumerate(videos):
            for data, kwargs, kind in video_to_layers(video):
                kwargs["visible"] = i == 0
                layers.append((data, kwargs, kind))
    return layers
