"""Turn what `napari_diffseg.io` reads into napari layer-data tuples.

Pure Python: no napari or Qt import, so the reader and sample-data hooks stay cheap to import and
testable without a display. A layer-data tuple is ``(data, layer_kwargs, layer_type)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_diffseg.io import DEFAULT_PALETTE, MOSXAV_COLORS, Video

LayerData = tuple[Any, dict[str, Any], str]

# Colours a user of angiography labels expects, by class name; ids without a named colour fall
# back to the DAVIS palette so that a palette PNG and the napari layer show the same colours.
CLASS_COLORS: dict[str, str] = {
    "vessel": "#ff3c3c",
    "catheter": "#3cdc3c",
    "guidewire": "#ffd700",
}


#: Colormap of the uncertainty overlay (a napari ``Colormap`` as a dict, so that this module needs
#: no napari import): black, then one violet hue (270 degrees) getting brighter. Every class
#: colour is at least 30 degrees of hue away (bundled and MOSXAV classes 60 or more: red, orange,
#: gold, green, light blue); inferno's yellow end looked like the guidewire's gold. Additive
#: blending makes 0 (certain) invisible.
UNCERTAINTY_COLORMAP: dict[str, Any] = {
    "name": "diffseg uncertainty",
    "display_name": "uncertainty (violet)",
    "colors": [[0.0, 0.0, 0.0, 1.0], [0.5, 0.0, 1.0, 1.0], [0.75, 0.5, 1.0, 1.0]],
}


def uncertainty_limits(n_classes: int) -> tuple[float, float]:
    """Contrast limits of the uncertainty overlay: 0 to ln C, the largest entropy (in nats)
    of C classes, so the same uncertainty always has the same colour. C counts the
    background; fewer than 2 (classes not known yet) counts as 2."""
    return 0.0, float(np.log(max(int(n_classes), 2)))


def uncertainty_layer_kwargs(
    name: str, n_classes: int, metadata: dict[str, Any]
) -> dict[str, Any]:
    """Keyword arguments of the Image layer that shows the per-pixel entropy (T, H, W)."""
    return {
        "name": name,
        "colormap": dict(UNCERTAINTY_COLORMAP),
        "contrast_limits": uncertainty_limits(n_classes),
        "blending": "additive",
        "opacity": 0.8,
        "metadata": metadata,
    }


def class_colormap(
    classes: dict[int, str] | None,
    max_id: int = 0,
    id_colors: dict[int, tuple[int, int, int]] | None = None,
) -> dict[int | None, Any]:
    """Direct label colormap ``{id: RGBA}`` for napari: background transparent, each class its
    colour (`id_colors` by id, e.g. a dataset's own table, else by class name, else the DAVIS
    palette), unknown ids magenta (`None` key)."""
    ids = set(classes or {}) | set(range(1, max(int(max_id), 0) + 1))
    cmap: dict[int | None, Any] = {0: np.zeros(4, dtype=np.float32), None: "magenta"}
    for i in sorted(ids):
        if i == 0:
            continue
        name = (classes or {}).get(i, "")
        if id_colors and i in id_colors:
            cmap[i] = np.append(np.asarray(id_colors[i], dtype=np.float32) / 255.0, 1.0)
        elif name in CLASS_COLORS:
            cmap[i] = CLASS_COLORS[name]
        else:
            rgb = DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)].astype(np.float32) / 255.0
            cmap[i] = np.append(rgb, 1.0)
    return cmap


def labels_layer_kwargs(
    name: str,
    classes: dict[int, str] | None,
    max_id: int,
    metadata: dict[str, Any],
    id_colors: dict[int, tuple[int, int, int]] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of a Labels layer showing `classes` with their colours and names."""
    kwargs: dict[str, Any] = {
        "name": name,
        "colormap": class_colormap(classes, max_id, id_colors),
        "opacity": 0.6,
        "metadata": metadata,
    }
    if classes:
        n = max(max(classes), max_id) + 1
        # napari shows the `features` row of the label under the cursor in the status bar.
        kwargs["features"] = {
            "index": np.arange(n),
            "class": [classes.get(i, f"class {i}") for i in range(n)],
        }
    return kwargs


def video_metadata(video: Video) -> dict[str, Any]:
    """JSON-friendly metadata kept on the layers (and used by the writers to name frames)."""
    meta = video.meta
    return {
        "source": str(meta.path),
        "source_format": meta.source_format,
        "frame_names": list(meta.frame_names),
        "fps": meta.fps,
        "spacing": list(meta.spacing) if meta.spacing else None,
        "sequence": video.sequence,
        "classes": {int(k): v for k, v in (video.classes or {}).items()} or None,
        "labelled": list(video.labelled),
        **({"extra": meta.extra} if meta.extra else {}),
    }


def video_to_layers(video: Video, name: str | None = None) -> list[LayerData]:
    """Image layer for the frames, plus a Labels layer when the source carries annotations."""
    name = name or video.sequence or video.meta.path.stem or video.meta.path.name
    metadata = video_metadata(video)
    ndim_spatial = 2
    scale = None
    if video.meta.spacing:
        scale = (1.0, *map(float, video.meta.spacing))
    image_kwargs: dict[str, Any] = {
        "name": name,
        "metadata": metadata,
        "rgb": video.frames.ndim == 4,
    }
    if scale:
        image_kwargs["scale"] = scale
    layers: list[LayerData] = [(video.frames, image_kwargs, "image")]
    if video.labels is not None:
        max_id = int(video.labels.max()) if video.labels.size else 0
        # MOSXAV semantic masks keep the dataset's published colours
        meta = video.meta
        semantic_mosxav = (
            meta.source_format == "mosxav" and meta.extra.get("annotations") != "instance"
        )
        id_colors = MOSXAV_COLORS if semantic_mosxav else None
        kwargs = labels_layer_kwargs(f"{name} labels", video.classes, max_id, metadata, id_colors)
        if scale:
            kwargs["scale"] = scale[: 1 + ndim_spatial]
        layers.append((video.labels, kwargs, "labels"))
    return layers
