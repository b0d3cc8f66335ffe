"""What napari imports when it docks our widget or opens a file must not pull in torch: the
import takes seconds, and napari does it on its event loop (a frozen window)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", [
    "napari_diffseg.widgets",  # the dock widget contribution
    "napari_diffseg._reader",  # File > Open
    "napari_diffseg.engine.defaults",
])
def test_module_imports_without_torch(module):
    code = (f"import sys, {module}; "
            "print('torch' in sys.modules, 'napari_diffseg.engine.checkpoint' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["False", "False"], f"importing {module} imported torch or the engine"


def test_engine_names_still_import_lazily():
    import napari_diffseg.engine as engine

    assert callable(engine.segment)
    assert engine.TrainOptions().iterations > 0
    with pytest.raises(AttributeError):
        engine.no_such_name  # noqa: B018
