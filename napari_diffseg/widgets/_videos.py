"""Which layers make up a video in the viewer, and closing the videos the dock leaves behind.

The dock works on one video at a time. When the user opens another one (File ▸ Open, drag and
drop, the dock's Open…), the dock follows it, and the videos opened before leave the viewer:
napari has one slider and one canvas for all layers, so an 8-frame 64 x 64 TIFF left next to a
40-frame cine with 0.3 mm pixels keeps the slider at 40 steps and shrinks the cine to a corner.
Their projects are saved first, and opening a video again restores its work. No Qt here.
"""

from __future__ import annotations

import logging

from napari.layers import Image

from ._session import OWNER_KEY

logger = logging.getLogger(__name__)


def same_layer(a, b) -> bool:
    """Identity of two layers as napari hands them to a plugin: each lookup through the
    viewer a dock widget gets (napari's ``PublicOnlyProxy``) is a new proxy, so ``is``
    between two lookups of one layer is False."""
    if a is None or b is None:
        return a is b
    return getattr(a, "__wrapped__", a) is getattr(b, "__wrapped__", b)


def is_video(layer) -> bool:
    """An image layer holding frames, (T, H, W) or (T, H, W, 3), that is not the dock's own."""
    if not isinstance(layer, Image) or (layer.metadata or {}).get(OWNER_KEY):
        return False
    return layer.data.ndim - (1 if layer.rgb else 0) == 3


def opened_by_reader(layer) -> bool:
    """True for a layer napari-diffseg's reader made (its work lives in a project folder)."""
    return "source_format" in (layer.metadata or {})


def layers_of(viewer, image) -> list:
    """The video's image layer, the annotations read with it and the dock's layers for it."""
    source = (image.metadata or {}).get("source")
    found = [image]
    for layer in viewer.layers:
        meta = layer.metadata or {}
        if same_layer(layer, image):
            continue
        if (meta.get(OWNER_KEY) or {}).get("video") == image.name or (
            layer.name == f"{image.name} labels" and source and meta.get("source") == source
        ):
            found.append(layer)
    return found


def close_other_videos(viewer, keep, others) -> None:
    """Make `keep` the only video on the canvas: each of `others` that napari-diffseg's reader
    opened leaves the viewer with its layers; a video the user added in another way is only
    hidden (it is theirs). Then the view fits `keep`."""
    for other in others:
        if same_layer(other, keep) or other not in viewer.layers:
            continue
        group = layers_of(viewer, other)
        if opened_by_reader(other):
            logger.info("closing %s: the dock follows %s", other.name, keep.name)
            for layer in group:
                if layer in viewer.layers:
                    viewer.layers.remove(layer)
        else:
            for layer in group:
                layer.visible = False
    keep.visible = True
    viewer.reset_view(layers=layers_of(viewer, keep))
