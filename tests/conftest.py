"""Fixtures that build real input files with the real libraries (small: 32 x 48 frames)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from testutils import FOREGROUND, XA_STORAGE, H, W, label_frames, moving_square, save_palette_png


@pytest.fixture
def make_dicom(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray]]:
    """Factory: multi-frame X-ray angiography DICOM written with pydicom; -> (path, pixels)."""

    def _make(
        name: str = "cine.dcm",
        *,
        bits: int = 16,
        photometric: str = "MONOCHROME2",
        n_frames: int = 4,
        samples: int = 1,
        pixels: bool = True,
        frame_time: float | None = 66.7,
        **attributes: object,
    ) -> tuple[Path, np.ndarray]:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = XA_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = XA_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "XA"
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "SECRET-123"
        ds.NumberOfFrames = n_frames
        ds.Rows, ds.Columns = H, W
        ds.BitsAllocated = bits
        ds.BitsStored = 12 if bits == 16 else 8
        ds.HighBit = ds.BitsStored - 1
        ds.SamplesPerPixel = samples
        ds.PhotometricInterpretation = photometric if samples == 1 else "RGB"
        if samples == 3:
            ds.PlanarConfiguration = 0
        ds.PixelRepresentation = 0
        if frame_time is not None:
            ds.FrameTime = frame_time
        ds.ImagerPixelSpacing = [0.2, 0.3]
        for key, value in attributes.items():
            setattr(ds, key, value)
        dtype = np.uint16 if bits == 16 else np.uint8
        scale = 4000 if bits == 16 else 250
        data = (moving_square(n_frames).astype(np.float64) / FOREGROUND * scale).astype(dtype)
        if samples == 3:
            data = np.stack([data, data // 2, np.zeros_like(data)], axis=-1)
        if pixels:
            ds.PixelData = data.tobytes()
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        return path, data

    return _make


@pytest.fixture
def make_davis(tmp_path: Path) -> Callable[..., Path]:
    """Factory: DAVIS root with JPEG frames, annotations every 5th frame, optional classes."""

    def _make(
        root_name: str = "davis",
        sequences: tuple[str, ...] = ("seq",),
        *,
        n_frames: int = 10,
        annotation_mode: str = "P",
        classes: object = None,
        every: int = 5,
    ) -> Path:
        root = tmp_path / root_name
        labels = label_frames(n_frames)
        frames = moving_square(n_frames)
        for seq in sequences:
            frame_dir = root / "JPEGImages" / seq
            ann_dir = root / "Annotations" / seq
            frame_dir.mkdir(parents=True)
            ann_dir.mkdir(parents=True)
            for t in range(n_frames):
                Image.fromarray(frames[t]).save(frame_dir / f"{t:05d}.jpg", quality=95)
                if t % every:
                    continue
                if annotation_mode == "P":
                    save_palette_png(ann_dir / f"{t:05d}.png", labels[t])
                else:
                    Image.fromarray(labels[t]).save(ann_dir / f"{t:05d}.png")
        if classes is not None:
            (root / "classes.json").write_text(json.dumps(classes))
        return root

    return _make
