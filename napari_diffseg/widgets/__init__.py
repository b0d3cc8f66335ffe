"""napari dock widgets: segment a video, review its uncertainty, correct, verify, fine-tune.

Thin Qt code over :mod:`napari_diffseg.engine` and :mod:`napari_diffseg.io`; see
``docs/user-guide.md``.
"""

from ._dock import DiffSegWidget

__all__ = ["DiffSegWidget"]
