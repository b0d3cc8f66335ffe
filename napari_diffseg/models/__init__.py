"""The bundled default model (trained by scripts/train_default_model.py; see docs/model.md)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).with_name("default.pt")


def default_model_path() -> Path:
    """Path of the bundled model; FileNotFoundError with the way to make it if it is missing."""
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(
            f"{DEFAULT_MODEL}: the bundled default model is missing; create it with "
            "'python scripts/train_default_model.py' or pass --model"
        )
    return DEFAULT_MODEL
