"""Small generated datasets with MOSXAV's protocol (labels on every 5th frame)."""

from __future__ import annotations

import pytest
from engine_testdata import synthetic_video

from napari_diffseg.data.sequences import dataset_from_videos


@pytest.fixture(scope="session")
def train_set():
    return dataset_from_videos([synthetic_video(1), synthetic_video(2)], "train")


@pytest.fixture(scope="session")
def val_set():
    return dataset_from_videos([synthetic_video(9, every=2)], "val")
