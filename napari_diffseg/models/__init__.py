"""The bundled default model (trained by scripts/train_default_model.py; see docs/model.md)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).with_name("default.pt")
#: The bundled model's classes, known without loading torch (the dock makes its layers with
#: them); tests/engine/test_bundled_model.py checks them against the checkpoint.
BUNDLED_CLASSES: dict[int, str] = {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}


def default_model_path() -> Path:
    """Path of the bundled model; FileNotFoundError with the way to make it if it is missing."""
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(
            f"{DEFAULT_MODEL}: the bundled default model is missing; create it with "
            "'python scripts/train_default_model.py' or pass --model"
        )
    return DEFAULT_MODEL
