"""JPEG 2000 decoded at a reduced resolution level (:mod:`medfusion.ingest.dicom.reduced`) gives the model
the same input as a full decode + resize, within a stated bound.

Bound, for every transfer syntax the reduced path serves (JPEG 2000 lossless ``.90`` and lossy ``.91``),
on the z-scored model input ``(1, H, W)`` of :func:`~medfusion.processing.transforms.image_transforms`
(inference chain, ``area`` resize) at 32², 64² and 224²: max abs difference <= :data:`MAX_ABS`, mean abs
difference <= :data:`MAX_MEAN`, Pearson correlation >= :data:`MIN_CORR`. The difference is the
anti-aliasing filter: the wavelet low-pass bands plus an ``area`` resize of factor 2-4 per side,
against an ``area`` resize of the full image; it peaks on sharp edges (collimator borders, burnt-in
letters), and its mean grows as the model's side shrinks. Measured on the real radiographs below:
32² max 0.42-0.51, mean 0.045-0.061, correlation >= 0.9949; 64² max 0.24-0.73, mean 0.021-0.037;
224² max 0.23-0.79, mean 0.005-0.021, correlation >= 0.9992; at 512² nothing is dropped (identical).

Real radiographs: pydicom-data's RG1 (CR chest, 1955x1841, 15 bits, MONOCHROME1, windowed) and RG3 (CR,
1760x1760, 10 bits), as their lossless and lossy JPEG 2000 files; skipped without pydicom-data (the
``real-data`` extra, installed on CI). Generated: a 12-bit 1100x900 radiograph-like image with a
collimator edge, encoded here by pydicom (pylibjpeg-openjpeg) lossless and lossy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless, SecondaryCaptureImageStorage, generate_uid

from medfusion.datasets.assets import _package_dir
from medfusion.ingest.dicom import reduced
from medfusion.ingest.dicom.read import read_dicom
from medfusion.processing.transforms import image_transforms

MAX_ABS = 1.0
MAX_MEAN = 0.08
MIN_CORR = 0.99
SIZES = ((32, 32), (64, 64), (224, 224))

_DATA = _package_dir("data_store")
REAL = [_DATA / "data" / f"{name}.dcm" for name in ("RG1_J2KR", "RG1_J2KI", "RG3_J2KR", "RG3_J2KI")] if _DATA else []
needs_real = pytest.mark.skipif(
    not REAL or not all(p.is_file() for p in REAL),
    reason="pydicom-data not installed: pip install pydicom-data==1.0.0 (pip install -e '.[real-data]')",
)


def _radiograph(rows: int, cols: int, bits: int, seed: int = 0) -> np.ndarray:
    """A radiograph-like ``(rows, cols)`` uint16 image: smooth anatomy, ribs, noise, a collimator edge."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    y, x = y / rows, x / cols
    lungs = np.exp(-(((x - 0.32) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(
        -(((x - 0.68) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)
    )
    ribs = 0.15 * np.sin(2 * np.pi * 9 * y + 3 * x) ** 2
    img = 0.2 + 0.6 * lungs + ribs + 0.02 * rng.standard_normal((rows, cols))
    img[:, : cols // 12] = 0.02  # collimator: a sharp vertical edge
    img[rows - rows // 15 :, :] = 0.02
    top = 2**bits - 1
    return np.clip(img / img.max() * top, 0, top).astype(np.uint16)


def _write(path: Path, pixels: np.ndarray, bits: int, syntax: pydicom.uid.UID, **encode: object) -> Path:
    """A DX MONOCHROME2 file of ``pixels`` in ``syntax`` (pydicom's encoders)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, pixels, **encode)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("reduced")
    pixels = _radiograph(1100, 900, 12)
    return [
        _write(root / "j2kr.dcm", pixels, 12, JPEG2000Lossless),
        _write(root / "j2ki.dcm", pixels, 12, JPEG2000, j2k_cr=[20]),
    ]


def _difference(path: Path, size: tuple[int, int]) -> tuple[float, float, float, tuple[int, ...]]:
    """(max abs, mean abs, correlation) between the reduced and the full chain's model input, and the
    shape ``read_dicom`` returns with ``min_size``."""
    fast = image_transforms(size)({"image": str(path)})["image"]
    full = image_transforms(size, reduced_decode=False)({"image": str(path)})["image"]
    assert fast.shape == full.shape == (1, *size)
    diff = (fast - full).abs()
    corr = float(torch.corrcoef(torch.stack([fast.flatten(), full.flatten()]))[0, 1])
    shape = tuple(read_dicom(path, min_size=size).pixels.shape)
    return float(diff.max()), float(diff.mean()), corr, shape


def _check(path: Path) -> None:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    rows, cols = int(ds.Rows), int(ds.Columns)
    for size in SIZES:
        max_abs, mean_abs, corr, shape = _difference(path, size)
        # the reduced path was taken: every side a power-of-two fraction, >= 2x the model's, < 4x
        assert shape[-2] < rows and shape[-1] < cols, (path.name, size, shape)
        assert 2 * size[0] <= shape[-2] < 4 * size[0] or 2 * size[1] <= shape[-1] < 4 * size[1], (path.name, shape)
        assert max_abs <= MAX_ABS and mean_abs <= MAX_MEAN and corr >= MIN_CORR, (path.name, size, max_abs, mean_abs)


def test_generated_within_bound(generated: list[Path]) -> None:
    for path in generated:
        _check(path)


@needs_real
@pytest.mark.slow
def test_real_radiographs_within_bound() -> None:
    for path in REAL:
        _check(path)


@needs_real
def test_rg1_level_and_values() -> None:
    """RG1 lossless for a 64² model: level 3 (245x231 >= 128), the stored values of the full decode."""
    path = REAL[0]
    image = read_dicom(path, min_size=(64, 64))
    assert tuple(image.pixels.shape) == (1, 1, 245, 231)
    assert (image.meta["rows"], image.meta["columns"], image.meta["window"]) == (1955, 1841, (15000.0, 30000.0))
    full = read_dicom(path).pixels[0, 0]
    # the LL band is a low-pass of the full image: its mean over an 8x8 block tracks the block mean
    blocks = torch.nn.functional.avg_pool2d(full[None, :1952, :1840], 8)[0]
    assert float((image.pixels[0, 0, :244, :230] - blocks).abs().mean()) < 0.01


@pytest.mark.parametrize("bits", [8, 10, 12, 15, 16])
def test_level_zero_is_bit_exact(tmp_path: Path, bits: int) -> None:
    """Pillow's decoder, its container scaling undone, gives pydicom's stored values (lossless)."""
    pixels = _radiograph(96, 80, bits, seed=bits)
    ds = pydicom.dcmread(_write(tmp_path / "a.dcm", pixels, bits, JPEG2000Lossless))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    info = reduced.codestream_info(frame)
    assert info is not None and info[:2] == (bits, False) and info[2] >= 1
    out = reduced._pillow_decode(frame, 0, pixels.shape, bits)
    assert out is not None and np.array_equal(out, pixels)
    one = reduced._pillow_decode(frame, 1, pixels.shape, bits)
    assert one is not None and one.shape == (48, 40)


def test_reduce_level() -> None:
    assert reduced.reduce_level((1955, 1841), (64, 64), 5) == 3  # 245x231 >= 128; 123 < 128
    assert reduced.reduce_level((1955, 1841), (224, 224), 5) == 2  # 489x461 >= 448
    assert reduced.reduce_level((1955, 1841), (64, 64), 5, oversample=1) == 4  # 123x116 >= 64
    assert reduced.reduce_level((1955, 1841), (64, 64), 2) == 2  # the codestream's levels cap it
    assert reduced.reduce_level((128, 128), (64, 64), 5) == 0  # the demo cohort: nothing to drop
    assert reduced.reduce_level((1025, 1024), (256, 256), 5) == 1  # ceil(1025 / 2) = 513


def test_other_images_decode_in_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncompressed, too small to reduce, or switched off: full resolution, values unchanged."""
    pixels = _radiograph(512, 480, 12)
    native = _write(tmp_path / "native.dcm", pixels, 12, ExplicitVRLittleEndian)
    j2k = _write(tmp_path / "j2k.dcm", pixels, 12, JPEG2000Lossless)
    assert tuple(read_dicom(native, min_size=(64, 64)).pixels.shape) == (1, 1, 512, 480)
    assert tuple(read_dicom(j2k, min_size=(256, 256)).pixels.shape) == (1, 1, 512, 480)  # 256 < 2 x 256
    assert tuple(read_dicom(j2k, min_size=(64, 64)).pixels.shape) == (1, 1, 256, 240)  # 480 / 4 < 128
    monkeypatch.setenv("MEDFUSION_REDUCED_DECODE", "0")
    assert torch.equal(read_dicom(j2k, min_size=(64, 64)).pixels, read_dicom(native).pixels)


def test_precision_mismatch_falls_back(tmp_path: Path) -> None:
    """Bits Stored that disagrees with the codestream's precision: pydicom's decoder decides, in full."""
    pixels = _radiograph(512, 480, 12)
    ds = pydicom.dcmread(_write(tmp_path / "j2k.dcm", pixels, 12, JPEG2000Lossless))
    ds.BitsStored, ds.HighBit = 14, 13
    ds.save_as(tmp_path / "b.dcm")
    assert tuple(read_dicom(tmp_path / "b.dcm", min_size=(64, 64)).pixels.shape) == (1, 1, 512, 480)


def test_unusable_codestreams_are_left_to_the_full_decoder() -> None:
    assert reduced.codestream_info(b"not a codestream") is None
    assert reduced.codestream_info(b"\xff\x4f\xff\x51" + b"\x00" * 60) is None  # SIZ without COD
    assert reduced._pillow_decode(b"\xff\x4f\xff\x51" + b"\x00" * 200, 2, (512, 480), 12) is None


def test_jpeg_ls_decodes_with_pyjpegls_identically(tmp_path: Path) -> None:
    """Full decodes keep the fastest installed plugin: pyjpegls for JPEG-LS (3-4x pydicom's default)."""
    from pydicom.uid import JPEGLSLossless

    from medfusion.ingest.dicom.decode import _plugin

    pixels = _radiograph(300, 280, 12)
    jls = _write(tmp_path / "jls.dcm", pixels, 12, JPEGLSLossless)
    native = _write(tmp_path / "native.dcm", pixels, 12, ExplicitVRLittleEndian)
    assert _plugin(pydicom.dcmread(jls, stop_before_pixels=True)) == "pyjpegls"
    assert _plugin(pydicom.dcmread(native, stop_before_pixels=True)) == ""
    assert torch.equal(read_dicom(jls).pixels, read_dicom(native).pixels)


def test_clip_unit_is_clip_of_nan_to_num() -> None:
    """The display stage's two-pass clip maps NaN and -inf to 0, +inf to 1, exactly as before."""
    from medfusion.ingest.dicom.display import clip_unit

    x = np.random.default_rng(0).normal(0.5, 1.0, 1000).astype(np.float32)
    x[:4] = [np.nan, np.inf, -np.inf, -0.0]
    want = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    got = clip_unit(x)
    assert got.dtype == np.float32 and np.array_equal(got, want) and got is not x
