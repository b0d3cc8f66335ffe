"""Compressed multi-frame DICOM written by the tests with pydicom's encoders reads back equal.

The default install decodes JPEG Lossless, JPEG-LS, JPEG 2000 (pylibjpeg with its libjpeg and
openjpeg plugins) and RLE (pydicom itself). Encoding is another matter: pydicom encodes RLE
itself and JPEG 2000 through pylibjpeg-openjpeg, JPEG-LS only through `pyjpegls`, which the
`testing` extra installs (without it that case is skipped, naming the missing encoder).
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from napari_diffseg.io import read

SYNTAXES = [RLELossless, JPEGLSLossless, JPEG2000Lossless]


def _encoder_or_skip(syntax):
    encoder = get_encoder(syntax)
    if not encoder.is_available:
        pytest.skip(f"no {syntax.name} encoder installed (needs one of: "
                    f"{'; '.join(encoder.missing_dependencies)}); that its decoder is installed is "
                    "checked below")
    return encoder


@pytest.mark.parametrize("syntax", SYNTAXES, ids=["rle", "jpeg-ls", "jpeg2000"])
@pytest.mark.parametrize("bits", [8, 16])
def test_compressed_multiframe_reads_back_equal(make_dicom, syntax, bits):
    _encoder_or_skip(syntax)
    path, source = make_dicom(f"{syntax.keyword}.dcm", bits=bits, n_frames=6)
    rng = np.random.default_rng(bits)
    noise = rng.integers(0, 40, source.shape).astype(source.dtype)  # not trivially compressible
    source = source + noise
    ds = pydicom.dcmread(path)
    ds.PixelData = source.tobytes()
    ds.compress(syntax, source)
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax  # really compressed

    video = read(path)

    assert video.frames.shape == source.shape and video.frames.dtype == source.dtype
    np.testing.assert_array_equal(video.frames, source)
    assert video.meta.fps == pytest.approx(1000 / 66.7)
    assert video.meta.spacing == pytest.approx((0.2, 0.3))
    assert video.meta.extra["TransferSyntaxUID"] == str(syntax)


@pytest.mark.parametrize("syntax", [*SYNTAXES, JPEGLosslessSV1, JPEGLossless, JPEGBaseline8Bit],
                         ids=lambda syntax: syntax.keyword)
def test_default_install_decodes_every_compression_clinical_xa_uses(syntax):
    """What docs/install.md promises: these decoders come with `pip install napari-diffseg`."""
    decoder = get_decoder(syntax)
    assert decoder.is_available, f"{syntax.name}: {decoder.missing_dependencies}"
