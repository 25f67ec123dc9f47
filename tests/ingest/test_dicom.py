"""DICOM writing, reading, series, discovery and MONAI loading transforms.

Files are written with :func:`write_dicom` into ``tmp_path``, so the expected display values are
known exactly; colour decoding is also checked against pydicom's shipped test files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pydicom.encaps
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

import medfusion.ingest.dicom.decode as decode_module
from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.limits import DEFLATE_MARGIN_BYTES, byte_limit
from medfusion.ingest.dicom.read import read_dicom, read_dicom_header
from medfusion.ingest.dicom.series import read_series
from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.privacy import pseudonym
from medfusion.processing.transforms import LoadDicomd, image_transforms, input_error

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"


def _spec(**kw: object) -> DicomSpec:
    study_uid, series_uid = kw.pop("study_uid", STUDY), kw.pop("series_uid", SERIES)
    return DicomSpec(study_uid=study_uid, series_uid=series_uid, **kw)  # type: ignore[arg-type]


def _gradient(rows: int = 48, cols: int = 64, hi: int = 4095) -> np.ndarray:
    """A smooth 2D ramp (rows, cols) from 0 to ``hi`` plus a bump: compresses well, no flat areas."""
    y, x = np.mgrid[0:rows, 0:cols]
    ramp = (x / (cols - 1)) * 0.7 + (y / (rows - 1)) * 0.3
    return np.rint(ramp * hi).astype(np.int64)


def _minmax(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return (values - values.min()) / (values.max() - values.min())


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window with output in [0, 1]."""
    c, w = center - 0.5, width - 1.0
    return np.clip((values - c) / w + 0.5, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Round trips per transfer syntax
# ---------------------------------------------------------------------------------------------

LOSSLESS = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
]


@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda uid: uid.name)
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_lossless_round_trip_gives_minmax_display_values(tmp_path: Path, syntax: str, bits: int) -> None:
    stored = _gradient(hi=2**bits - 1)
    path = write_dicom(tmp_path / "a.dcm", stored, _spec(transfer_syntax=syntax, bits_stored=bits))

    image = read_dicom(path)

    assert image.pixels.dtype == torch.float32
    assert image.pixels.shape == (1, 1, 48, 64)
    np.testing.assert_allclose(image.pixels[0, 0].numpy(), _minmax(stored), atol=1e-6)
    assert image.meta["transfer_syntax"] == syntax
    assert image.meta["voi"] == "minmax"
    assert image.meta["window"] == pytest.approx((stored.max() / 2, stored.max()))
    assert image.source == str(path)


def test_jpeg_baseline_round_trip_within_tolerance(tmp_path: Path) -> None:
    stored = _gradient(hi=255)
    path = write_dicom(tmp_path / "a.dcm", stored, _spec(transfer_syntax=JPEGBaseline8Bit, bits_stored=8))

    image = read_dicom(path)

    assert image.meta["transfer_syntax"] == JPEGBaseline8Bit
    error = np.abs(image.pixels[0, 0].numpy() - _minmax(stored))
    assert error.mean() < 0.01 and error.max() < 0.06


def test_jpeg_baseline_rgb_is_stored_as_ybr_and_read_back_as_rgb(tmp_path: Path) -> None:
    rgb = np.stack([_gradient(hi=255), _gradient(hi=255)[:, ::-1], np.full((48, 64), 128)], axis=-1)
    spec = _spec(photometric="RGB", bits_stored=8, transfer_syntax=JPEGBaseline8Bit)
    path = write_dicom(tmp_path / "c.dcm", rgb, spec)

    image = read_dicom(path)

    assert image.meta["photometric_interpretation"] == "YBR_FULL_422"
    assert image.pixels.shape == (1, 3, 48, 64)
    error = np.abs(image.pixels[0].permute(1, 2, 0).numpy() - rgb / 255.0)
    assert error.mean() < 0.02


def test_writer_rejects_inputs_it_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bits_stored=8"):
        write_dicom(tmp_path / "a.dcm", _gradient(), _spec(transfer_syntax=JPEGBaseline8Bit, bits_stored=12))
    with pytest.raises(ValueError, match="do not fit"):
        write_dicom(tmp_path / "a.dcm", _gradient(hi=5000), _spec(bits_stored=12))
    with pytest.raises(ValueError, match="integer"):
        write_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.float32), _spec())


# ---------------------------------------------------------------------------------------------
# Grayscale pipeline: MONOCHROME1, rescale, window, VOI LUT, multi-frame
# ---------------------------------------------------------------------------------------------


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = _gradient()
    path = write_dicom(tmp_path / "m1.dcm", stored, _spec(photometric="MONOCHROME1"))

    image = read_dicom(path)

    assert image.meta["photometric_interpretation"] == "MONOCHROME1"
    np.testing.assert_allclose(image.pixels[0, 0].numpy(), 1.0 - _minmax(stored), atol=1e-6)


def test_rescale_then_window_in_modality_units(tmp_path: Path) -> None:
    stored = _gradient()
    slope, intercept, center, width = 2.0, -1024.0, 1500.0, 3000.0
    path = write_dicom(
        tmp_path / "ct.dcm",
        stored,
        _spec(
            modality="CT", rescale_slope=slope, rescale_intercept=intercept, window_center=center, window_width=width
        ),
    )

    image = read_dicom(path)

    expected = _linear_window(stored * slope + intercept, center, width)
    np.testing.assert_allclose(image.pixels[0, 0].numpy(), expected, atol=1e-5)
    assert image.meta["window"] == (center, width)
    assert image.meta["voi"] == "window"
    assert 0.0 < float(image.pixels.mean()) < 1.0


def test_window_is_applied_and_clips(tmp_path: Path) -> None:
    stored = _gradient()
    path = write_dicom(tmp_path / "w.dcm", stored, _spec(window_center=2000, window_width=1000))

    values = read_dicom(path).pixels[0, 0].numpy()

    np.testing.assert_allclose(values, _linear_window(stored, 2000, 1000), atol=1e-5)
    assert values[stored <= 1400].max() == 0.0 and values[stored >= 2600].min() == 1.0


def test_signed_rescale_without_window_uses_minmax_of_modality_values(tmp_path: Path) -> None:
    stored = _gradient() - 2048  # signed 12-bit
    path = write_dicom(tmp_path / "s.dcm", stored, _spec(modality="CT", rescale_slope=1.0, rescale_intercept=-1000.0))

    image = read_dicom(path)

    np.testing.assert_allclose(image.pixels[0, 0].numpy(), _minmax(stored), atol=1e-6)
    center, width = image.meta["window"]
    assert width == pytest.approx(stored.max() - stored.min())
    assert center == pytest.approx((stored.max() + stored.min()) / 2 - 1000.0)


def test_voi_lut_sequence_is_preferred(tmp_path: Path) -> None:
    stored = _gradient(hi=255)
    path = write_dicom(tmp_path / "lut.dcm", stored, _spec(bits_stored=8, window_center=10, window_width=5))
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 8])  # LUT Descriptor (ambiguous VR: say US)
    item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUT Data: an inverting LUT
    ds.VOILUTSequence = [item]
    ds.save_as(path)

    image = read_dicom(path)

    assert image.meta["voi"] == "voi_lut" and image.meta["window"] is None
    np.testing.assert_allclose(image.pixels[0, 0].numpy(), 1.0 - stored / 255.0, atol=1e-6)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEGLSLossless], ids=lambda u: u.name)
def test_multi_frame_keeps_frames_and_shares_one_scale(tmp_path: Path, syntax: str) -> None:
    frames = np.stack([_gradient() // (k + 1) for k in range(3)])
    path = write_dicom(tmp_path / "mf.dcm", frames, _spec(transfer_syntax=syntax, bits_stored=12))

    image = read_dicom(path)

    assert image.pixels.shape == (3, 1, 48, 64)
    assert image.meta["frames"] == 3
    assert image.meta["sop_uid"] == pydicom.dcmread(path).SOPInstanceUID
    np.testing.assert_allclose(image.pixels[:, 0].numpy(), _minmax(frames), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Colour
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless], ids=lambda u: u.name)
def test_rgb_round_trip_gives_three_channels(tmp_path: Path, syntax: str) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 40, 36, 3))
    path = write_dicom(tmp_path / "rgb.dcm", rgb, _spec(photometric="RGB", bits_stored=8, transfer_syntax=syntax))

    image = read_dicom(path)

    assert image.pixels.shape == (2, 3, 40, 36)
    np.testing.assert_allclose(image.pixels.permute(0, 2, 3, 1).numpy(), rgb / 255.0, atol=1e-6)
    assert image.meta["voi"] == "colour"


@pytest.mark.parametrize(
    "name",
    [
        "SC_ybr_full_422_uncompressed.dcm",  # native YBR_FULL_422
        "SC_rgb_dcmtk_+eb+cy+s2.dcm",  # JPEG baseline YBR_FULL_422
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline YBR_FULL
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless RGB
        "SC_rgb_rle.dcm",  # RLE RGB
    ],
)
def test_pydicom_colour_files_decode_to_rgb(name: str) -> None:
    reference = read_dicom(pydicom.data.get_testdata_file("SC_rgb_dcmtk_+eb+cr.dcm")).pixels  # plain RGB
    image = read_dicom(pydicom.data.get_testdata_file(name))

    assert image.pixels.shape == (1, 3, 100, 100)
    assert float((image.pixels - reference).abs().max()) < 0.03
    # First band is red, third band is blue.
    assert image.pixels[0, :, 5, 50].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=0.03)
    assert image.pixels[0, :, 45, 50].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=0.03)


def test_palette_colour_becomes_rgb() -> None:
    image = read_dicom(pydicom.data.get_testdata_file("examples_palette.dcm"))

    assert image.pixels.shape[:2] == (1, 3)
    assert image.meta["photometric_interpretation"] == "PALETTE COLOR"
    assert float(image.pixels.min()) >= 0.0 and float(image.pixels.max()) <= 1.0


# ---------------------------------------------------------------------------------------------
# Series
# ---------------------------------------------------------------------------------------------


def _write_series(folder: Path, order: list[int], *, series_uid: str = SERIES) -> list[Path]:
    paths = []
    for k in order:
        stored = np.full((32, 32), 100 * (k + 1), dtype=np.int64)
        spec = _spec(
            series_uid=series_uid,
            modality="CT",
            instance_number=10 - k,  # deliberately opposite to position order
            image_position=(0.0, 0.0, 2.5 * k),
            slice_thickness=2.5,
        )
        paths.append(write_dicom(folder / f"slice_{k}.dcm", stored, spec))
    return paths


def test_read_series_sorts_by_position_along_the_normal(tmp_path: Path) -> None:
    paths = _write_series(tmp_path, [3, 0, 4, 1, 2])

    volume = read_series(paths)

    assert volume.pixels.shape == (5, 1, 32, 32)
    means = volume.pixels.mean(dim=(1, 2, 3)).tolist()
    assert means == sorted(means) and means[0] == 0.0 and means[-1] == 1.0  # joint min-max over the volume
    assert volume.meta["frames"] == 5
    assert volume.meta["slice_spacing"] == pytest.approx(2.5)
    assert volume.source.endswith("slice_0.dcm")


def test_read_series_falls_back_to_instance_number(tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        spec = _spec(instance_number=3 - k)
        paths.append(write_dicom(tmp_path / f"i{k}.dcm", np.full((16, 16), k + 1), spec))

    volume = read_series(paths)

    means = volume.pixels.mean(dim=(1, 2, 3)).tolist()
    assert means == sorted(means, reverse=True)


def test_read_series_rejects_inconsistent_shapes_naming_the_file(tmp_path: Path) -> None:
    paths = _write_series(tmp_path, [0, 1, 2])
    odd = write_dicom(tmp_path / "odd.dcm", np.zeros((16, 32), np.int64), _spec(image_position=(0.0, 0.0, 9.0)))

    with pytest.raises(DicomReadError, match="inconsistent slice shape") as info:
        read_series([*paths, odd])
    assert info.value.source == str(odd)
    with pytest.raises(DicomReadError, match="empty series"):
        read_series([])


# ---------------------------------------------------------------------------------------------
# Refusals and broken files
# ---------------------------------------------------------------------------------------------


def test_max_pixels_refusal_happens_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_dicom(tmp_path / "huge.dcm", _gradient(), _spec())
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 40000, 40000  # header claims 1.6 G pixels; the data is tiny
    ds.save_as(path)
    decoded: list[object] = []
    full_reads: list[object] = []
    real_dcmread = pydicom.dcmread

    def spy_dcmread(*args: object, **kwargs: object) -> object:
        if not kwargs.get("stop_before_pixels"):
            full_reads.append(args)
        return real_dcmread(*args, **kwargs)

    monkeypatch.setattr(decode_module, "pixel_array", lambda *a, **k: decoded.append(a))
    monkeypatch.setattr(pydicom, "dcmread", spy_dcmread)

    with pytest.raises(DicomReadError) as info:
        read_dicom(path)

    assert info.value.reason == "image too large: 40000x40000x1 pixels > max_pixels 64000000"
    assert info.value.source == str(path)
    assert decoded == [] and full_reads == []


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", np.zeros((3, 20, 20), np.int64), _spec())
    assert read_dicom(path, max_pixels=1200).pixels.shape == (3, 1, 20, 20)
    with pytest.raises(DicomReadError, match=r"image too large: 20x20x3 pixels > max_pixels 1199"):
        read_dicom(path, max_pixels=1199)


def test_deflate_bomb_is_refused_while_inflating(tmp_path: Path) -> None:
    spec = _spec(transfer_syntax=DeflatedExplicitVRLittleEndian)
    path = write_dicom(tmp_path / "d.dcm", np.zeros((256, 256), np.int64), spec)
    assert path.stat().st_size < 4096  # 128 KiB of zeros deflate to almost nothing

    assert read_dicom_header(path, max_bytes=8000)["rows"] == 256  # a header read inflates the header only
    with pytest.raises(DicomReadError, match="deflated dataset inflates to more than 8000 bytes"):
        read_dicom(path, max_bytes=8000)
    assert read_dicom(path).pixels.shape == (1, 1, 256, 256)


def test_files_over_the_byte_bound_are_refused_before_reading(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", _gradient(), _spec())
    size = path.stat().st_size
    for read in (read_dicom_header, read_dicom):
        with pytest.raises(DicomReadError, match=f"file too large: {size} bytes > max_bytes {size - 1}"):
            read(path, max_bytes=size - 1)
    assert read_dicom(path, max_bytes=size).pixels.shape == (1, 1, 48, 64)
    assert byte_limit(1000) == 8000 + DEFLATE_MARGIN_BYTES


def _no_pixel_data(path: Path) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SOPClassUID = pydicom.uid.ComputedRadiographyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 8, 8, 16, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(path, enforce_file_format=True)
    return path


def _broken(kind: str, tmp_path: Path) -> Path:
    good = write_dicom(tmp_path / "good.dcm", _gradient(), _spec())
    path = tmp_path / f"{kind}.dcm"
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[:-1000])
    elif kind == "truncated_header":
        path.write_bytes(data[:300])
    elif kind == "text":
        path.write_text("FINDINGS: no acute disease.\n" * 20)
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no_pixels":
        _no_pixel_data(path)
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("truncated", "truncated pixel data: expected 6144 bytes, got 5144"),
        ("truncated_header", None),
        ("text", "not a DICOM file (no DICM preamble and no valid dataset)"),
        ("random", "not a DICOM file (no DICM preamble and no valid dataset)"),
        ("empty", "empty file"),
        ("no_pixels", "no pixel data"),
        ("missing", "file not found"),
    ],
)
def test_broken_files_raise_dicom_read_error_naming_the_path(tmp_path: Path, kind: str, reason: str | None) -> None:
    path = _broken(kind, tmp_path)

    with pytest.raises(DicomReadError) as info:
        read_dicom(path)

    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    if reason is not None:
        assert info.value.reason == reason


def test_unsupported_transfer_syntax_is_named(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "v.dcm", np.zeros((8, 8), np.int64), _spec())
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: pydicom has no decoder
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path)

    with pytest.raises(DicomReadError, match=r"^.*: unsupported transfer syntax 1\.2\.840\.10008\.1\.2\.4\.100 "):
        read_dicom(path)


def test_header_of_non_image_and_non_dicom(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="not an image"):
        read_dicom_header(pydicom.data.get_testdata_file("rtplan.dcm"))
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        read_dicom_header(_broken("text", tmp_path))


def test_only_dicom_read_error_escapes_on_corrupted_bytes(tmp_path: Path) -> None:
    """Flip bytes at many offsets of valid files: each read either succeeds or raises DicomReadError."""
    rng = np.random.default_rng(7)
    sources = [
        write_dicom(tmp_path / "n.dcm", _gradient(), _spec(window_center=100, window_width=50)),
        write_dicom(tmp_path / "r.dcm", _gradient(), _spec(transfer_syntax=RLELossless)),
        write_dicom(tmp_path / "j.dcm", _gradient(), _spec(transfer_syntax=JPEG2000Lossless)),
    ]
    for source in sources:
        data = bytearray(source.read_bytes())
        for trial in range(12):
            mutated = bytearray(data)
            for offset in rng.integers(128, len(data), size=4):
                mutated[offset] = int(rng.integers(0, 256))
            path = tmp_path / f"mut_{source.stem}_{trial}.dcm"
            path.write_bytes(bytes(mutated[: int(rng.integers(200, len(data) + 1))]))
            try:
                image = read_dicom(path)
            except DicomReadError:
                continue
            assert torch.isfinite(image.pixels).all()
            assert float(image.pixels.min()) >= 0.0 and float(image.pixels.max()) <= 1.0


# ---------------------------------------------------------------------------------------------
# Privacy
# ---------------------------------------------------------------------------------------------


def test_meta_contains_no_patient_identifiers_or_dates(tmp_path: Path) -> None:
    phi = {
        "patient_name": "Doe^Janet",
        "patient_id": "PID-4417",
        "patient_birth_date": "19610923",
        "accession_number": "ACC778899",
        "study_date": "20240117",
    }
    path = write_dicom(tmp_path / "phi.dcm", _gradient(), _spec(**phi, view_position="PA"))
    assert pydicom.dcmread(path).PatientName == "Doe^Janet"  # the file itself does hold them

    ds = pydicom.dcmread(path)
    uids = {"study_uid": ds.StudyInstanceUID, "series_uid": ds.SeriesInstanceUID, "sop_uid": ds.SOPInstanceUID}
    for meta in (read_dicom(path).meta, read_dicom_header(path)):
        assert {k: meta[k] for k in uids} == uids  # random UIDs: their digits may contain anything, checked apart
        text = str({k: v for k, v in meta.items() if k not in uids})
        for value in [*phi.values(), "Doe", "Janet", "4417", "1961", "2024"]:
            assert value not in text
        assert meta["accession_pseudonym"] == pseudonym("ACC778899", kind="acc")
        assert meta["view_position"] == "PA" and meta["body_part"] == "CHEST"
        assert meta["pixel_spacing"] == [0.5, 0.5]


def test_meta_keys() -> None:
    meta = read_dicom(pydicom.data.get_testdata_file("CT_small.dcm")).meta
    expected = {
        "study_uid", "series_uid", "sop_uid", "modality", "photometric_interpretation", "transfer_syntax",
        "rows", "columns", "frames", "samples_per_pixel", "bits_stored", "pixel_spacing", "view_position",
        "body_part", "accession_pseudonym", "instance_number", "image_position", "window",
    }  # fmt: skip
    assert expected <= set(meta)
    assert meta["rows"] == 128 and meta["modality"] == "CT" and meta["accession_pseudonym"] is None


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------


def test_scan_groups_by_study_and_series_and_lists_rejections(tmp_path: Path) -> None:
    study_a, study_b = "1.2.3.100", "1.2.3.200"
    img = _gradient(32, 32)
    # Study A: two series, files in nested folders, with and without extension.
    first_series = {"study_uid": study_a, "series_uid": "1.2.3.100.1", "accession_number": "A1"}
    write_dicom(tmp_path / "a" / "x" / "IMG2", img, _spec(**first_series, instance_number=2))
    write_dicom(tmp_path / "a" / "IMG1.dcm", img, _spec(**first_series, instance_number=1))
    write_dicom(tmp_path / "lateral.bin", img, _spec(study_uid=study_a, series_uid="1.2.3.100.2", view_position="LL"))
    # Study B: one series.
    write_dicom(tmp_path / "b" / "1", img, _spec(study_uid=study_b, series_uid="1.2.3.200.1"))
    # Noise: non-DICOM, non-image, broken, hidden, DICOMDIR.
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "b" / "empty").write_bytes(b"")
    _no_pixel_data(tmp_path / "b" / "nopix.dcm")  # header is fine: pixels are only checked on read
    write_dicom(tmp_path / ".hidden.dcm", img, _spec(study_uid="9.9.9"))
    write_dicom(tmp_path / ".cache" / "x.dcm", img, _spec(study_uid="9.9.8"))
    (tmp_path / "DICOMDIR").write_bytes(b"whatever")
    rtplan = pydicom.data.get_testdata_file("rtplan.dcm")
    (tmp_path / "rt.dcm").write_bytes(Path(rtplan).read_bytes())

    scan = scan_dicom_folder(tmp_path, progress=False)

    assert set(scan.studies) == {study_a, study_b, STUDY}
    a = scan.studies[study_a]
    assert set(a.series) == {"1.2.3.100.1", "1.2.3.100.2"}
    assert [ref.path.name for ref in a.series["1.2.3.100.1"]] == ["IMG1.dcm", "IMG2"]
    assert [ref.instance_number for ref in a.series["1.2.3.100.1"]] == [1, 2]
    assert a.accession_pseudonym == pseudonym("A1", kind="acc")
    assert a.series["1.2.3.100.2"][0].view_position == "LL"
    assert len(a.paths) == 3 and scan.n_instances == 5
    ref = scan.studies[study_b].series["1.2.3.200.1"][0]
    assert (ref.frames, ref.rows, ref.columns, ref.modality) == (1, 32, 32, "CR")
    reasons = {Path(r.source).name: r.reason for r in scan.rejected}
    assert reasons == {
        "notes.txt": "not a DICOM file (no DICM preamble and no valid dataset)",
        "empty": "empty file",
        "rt.dcm": "not an image (RT Plan Storage)",
    }


def test_scan_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="folder not found"):
        scan_dicom_folder(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# MONAI transforms
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, object]:
    frames = np.stack([np.full((40, 50), v) for v in (0, 1000, 4000)])
    rgb = np.random.default_rng(0).integers(0, 256, (30, 20, 3))
    return {
        "single": write_dicom(tmp_path / "single.dcm", _gradient(40, 50), _spec()),
        "multi": write_dicom(tmp_path / "multi.dcm", frames, _spec()),
        "rgb": write_dicom(tmp_path / "rgb.dcm", rgb, _spec(photometric="RGB", bits_stored=8)),
        "series": _write_series(tmp_path / "series", [2, 0, 1, 3]),
    }


@pytest.mark.parametrize(
    ("settings", "source", "expected_shape"),
    [
        ({}, "single", (1, 40, 50)),
        ({"frame_policy": "first"}, "multi", (1, 40, 50)),
        ({"frame_policy": "mean"}, "multi", (1, 40, 50)),
        ({"grayscale": True}, "rgb", (1, 30, 20)),
        ({"grayscale": False}, "rgb", (3, 30, 20)),
        ({"spatial_dims": 3}, "series", (1, 4, 32, 32)),
        ({"spatial_dims": 3}, "multi", (1, 3, 40, 50)),
    ],
)
def test_load_dicomd_shapes(files: dict[str, object], settings: dict, source: str, expected_shape: tuple) -> None:
    value = files[source]
    record = {"image": [str(p) for p in value] if isinstance(value, list) else str(value), "report": "r", "label": 1}

    out = LoadDicomd(**settings)(record)

    assert tuple(out["image"].shape) == expected_shape
    assert out["image"].dtype == torch.float32
    assert out["report"] == "r" and out["label"] == 1


def test_frame_policies_pick_the_right_frame(files: dict[str, object]) -> None:
    record = {"image": str(files["multi"])}
    first = LoadDicomd(frame_policy="first")(record)["image"]
    middle = LoadDicomd(frame_policy="middle")(record)["image"]
    mean = LoadDicomd(frame_policy="mean")(record)["image"]
    assert float(first.mean()) == 0.0
    assert float(middle.mean()) == pytest.approx(0.25)
    assert float(mean.mean()) == pytest.approx((0.0 + 0.25 + 1.0) / 3)


def test_2d_takes_the_frontal_view_of_a_study(tmp_path: Path) -> None:
    lateral = write_dicom(tmp_path / "l.dcm", np.zeros((20, 20), int), _spec(view_position="LL", instance_number=1))
    frontal = write_dicom(tmp_path / "f.dcm", np.zeros((24, 20), int), _spec(view_position="PA", instance_number=2))

    out = LoadDicomd()({"image": [lateral, frontal]})

    assert out["image"].shape == (1, 24, 20)


@pytest.mark.parametrize(
    ("size", "dims", "source", "train"),
    [((32, 32), 2, "single", False), ((32, 48), 2, "multi", True), ((4, 16, 16), 3, "series", True)],
)
def test_image_transforms_shapes_and_pass_through(
    files: dict[str, object], size: tuple, dims: int, source: str, train: bool
) -> None:
    value = files[source]
    record = {
        "image": [str(p) for p in value] if isinstance(value, list) else str(value),
        "report": "FINDINGS: clear.",
        "label": torch.tensor([1.0, 0.0]),
        "meta": {"study_uid": STUDY},
    }
    chain = image_transforms(size, spatial_dims=dims, train=train)
    chain.set_random_state(0)

    out = chain(record)

    assert type(out["image"]) is torch.Tensor
    assert tuple(out["image"].shape) == (1, *size)
    assert torch.isfinite(out["image"]).all()
    assert out["report"] == record["report"] and out["meta"] == record["meta"]
    assert torch.equal(out["label"], record["label"])
    if source == "single":
        assert abs(float(out["image"].mean())) < 1e-4 and float(out["image"].std()) == pytest.approx(1.0, rel=0.05)


def test_image_transforms_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="spatial_dims"):
        image_transforms((32, 32), spatial_dims=3)
    chain = image_transforms((32, 32))
    with pytest.raises(Exception) as info:
        chain({"image": str(tmp_path / "missing.dcm")})
    rejected = input_error(info.value)
    assert isinstance(rejected, DicomReadError) and rejected.reason == "file not found"
