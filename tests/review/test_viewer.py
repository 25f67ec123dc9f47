"""The viewer's pure parts: modality-unit pixels, presets, windowing, study listing, geometry, masking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medfusion.errors import DicomReadError
from medfusion.review.auth import Authenticator, add_user, read_users
from medfusion.review.viewer.component import read_calipers
from medfusion.review.viewer.geometry import Caliper, ViewTransform, cardiothoracic_ratio
from medfusion.review.viewer.header import MASK, header_rows, read_header
from medfusion.review.viewer.pixels import load_instance
from medfusion.review.viewer.study import list_study
from medfusion.review.viewer.windowing import distinct_levels, presets, render

STUDY = "1.2.826.0.1.3680043.8.498.77"


def _write(
    path: Path,
    stored: np.ndarray,
    *,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    signed: bool = True,
    series: str = "1.2.826.0.1.3680043.8.498.78",
    view: str | None = None,
    instance: int = 1,
    **attrs: object,
) -> Path:
    """A small uncompressed DICOM file: ``stored`` is (rows, cols), (frames, rows, cols) or (rows, cols, 3) RGB."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = sop = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = STUDY, series, instance
    ds.Modality = modality
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "PID-991234", "19470312"
    ds.AccessionNumber, ds.StudyDate = "ACC-55120", "20240105"
    if view:
        ds.ViewPosition = view
    colour = stored.ndim == 3 and stored.shape[-1] == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else photometric
    if colour:
        ds.PlanarConfiguration = 0
    if stored.ndim == 3 and not colour:
        ds.NumberOfFrames = stored.shape[0]
    ds.Rows, ds.Columns = stored.shape[-3 if colour else -2], stored.shape[-2 if colour else -1]
    bits = 8 if colour else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits if colour else 12, (bits if colour else 12) - 1
    ds.PixelRepresentation = 1 if signed and not colour else 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    dtype = np.uint8 if colour else (np.int16 if signed else np.uint16)
    ds.PixelData = np.ascontiguousarray(stored.astype(dtype)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _ct(tmp_path: Path) -> Path:
    stored = np.array([[0, 24, 1024, 1064], [1424, 2024, 3024, 4095]], dtype=np.uint16)  # 12 bits unsigned
    return _write(
        tmp_path / "ct.dcm",
        stored,
        signed=False,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=[40, -600],
        WindowWidth=[400, 1500],
        WindowCenterWidthExplanation=["SOFT", "LUNG"],
    )


def test_ct_pixels_are_hounsfield_units_after_rescale(tmp_path) -> None:
    image = load_instance(_ct(tmp_path))
    assert image.units == "HU" and image.shape == (2, 4) and image.frames == 1
    assert image.frame(0).tolist() == [[-1024, -1000, 0, 40], [400, 1000, 2000, 3071]]
    assert not image.inverted


def test_presets_list_the_header_windows_with_explanations_then_standard_ct_windows(tmp_path) -> None:
    names = {w.name: (w.center, w.width) for w in presets(load_instance(_ct(tmp_path)))}
    assert list(names)[:2] == ["Header 1: SOFT", "Header 2: LUNG"]
    assert names["Header 1: SOFT"] == (40.0, 400.0) and names["Header 2: LUNG"] == (-600.0, 1500.0)
    assert names["Lung"] == (-600.0, 1500.0) and names["Mediastinum"] == (50.0, 350.0)
    assert names["Bone"] == (400.0, 1800.0) and names["Soft tissue"] == (40.0, 400.0)
    assert names["Full range"] == ((-1024 + 3071) / 2, 3071 + 1024)


def test_window_in_hu_maps_known_values_and_a_wider_window_shows_more_levels(tmp_path) -> None:
    image = load_instance(_ct(tmp_path))
    by_name = {w.name: w for w in presets(image)}
    soft = render(image.frame(0), by_name["Soft tissue"], inverted=False)  # -160..240 HU
    assert soft.tolist() == [[0, 0, 102, 128], [255, 255, 255, 255]]  # 0 HU -> (0 + 160 - 0.5)/399 * 255
    # a ramp of 4096 HU values: the soft tissue window shows 256 levels over 400 HU and clips the rest;
    # the full range window spreads the same 256 levels over everything, and soft tissue clips 90% of pixels
    ramp = np.linspace(-1024, 3071, 4096, dtype=np.float32)[None, :]
    narrow = render(ramp, by_name["Soft tissue"], inverted=False)
    wide = render(ramp, by_name["Full range"], inverted=False)
    assert distinct_levels(narrow) == 256 and distinct_levels(wide) == 256
    assert (narrow == 0).mean() > 0.2 and (narrow == 255).mean() > 0.6
    assert (wide == 0).mean() < 0.01 and (wide == 255).mean() < 0.01
    # the old display values were already windowed: values the stored window clipped are one level
    clipped_before = np.clip(ramp, -160, 240)
    assert distinct_levels(render(clipped_before, by_name["Full range"], inverted=False)) < 30


def test_monochrome1_is_flagged_and_displayed_inverted_and_invert_flips_back(tmp_path) -> None:
    stored = np.array([[0, 1000, 4000]], dtype=np.uint16)
    path = _write(tmp_path / "m1.dcm", stored, modality="DX", photometric="MONOCHROME1", signed=False)
    image = load_instance(path)
    assert image.inverted and image.units == "stored value"
    assert image.frame(0).tolist() == [[0, 1000, 4000]]  # modality values as stored (no rescale)
    full = next(w for w in presets(image) if w.name == "Full range")
    shown = render(image.frame(0), full, inverted=image.inverted)
    assert shown[0, 0] == 255 and shown[0, 2] == 0  # low stored values are bright on MONOCHROME1
    flipped = render(image.frame(0), full, inverted=image.inverted, invert=True)
    assert flipped[0, 0] == 0 and flipped[0, 2] == 255


def test_multiframe_and_colour(tmp_path) -> None:
    frames = np.stack([np.full((3, 4), v, np.uint16) for v in (10, 20, 30)])
    image = load_instance(_write(tmp_path / "mf.dcm", frames, modality="XA", signed=False))
    assert image.frames == 3 and image.frame(1).mean() == 20 and image.frame(99).mean() == 30
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (255, 255, 255)
    colour = load_instance(_write(tmp_path / "rgb.dcm", rgb, modality="XC", signed=False))
    assert colour.units == "luminance" and colour.frame(0)[0, 0] == pytest.approx(0.299 * 255, abs=0.01)
    assert colour.frame(0)[1, 1] == pytest.approx(255, abs=0.01)


def test_auto_window_for_radiographs_ignores_outliers(tmp_path) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(1000, 2000, (50, 50)).astype(np.uint16)
    values[0, :5] = 4095  # collimator edge / marker
    image = load_instance(_write(tmp_path / "dx.dcm", values, modality="DX", signed=False))
    auto = next(w for w in presets(image) if w.name.startswith("Auto"))
    assert 1000 <= auto.center - auto.width / 2 <= 1030 and 1970 <= auto.center + auto.width / 2 <= 2000
    assert not any(w.name == "Lung" for w in presets(image))  # CT presets are for CT only


def test_pixel_bound_refuses_before_decoding(tmp_path) -> None:
    with pytest.raises(DicomReadError, match="image too large"):
        load_instance(_ct(tmp_path), max_pixels=4)


def test_study_lists_series_frontal_first_and_instances_in_order(tmp_path) -> None:
    dx = {"modality": "DX", "signed": False}
    lateral = _write(tmp_path / "b.dcm", np.zeros((4, 4)), series="1.2.3.9", view="LL", **dx)
    pa2 = _write(tmp_path / "c.dcm", np.zeros((4, 4)), series="1.2.3.5", view="PA", instance=2, **dx)
    pa1 = _write(tmp_path / "a.dcm", np.zeros((4, 4)), series="1.2.3.5", view="PA", instance=1, **dx)
    (tmp_path / "junk.dcm").write_text("not dicom")
    study = list_study([lateral, pa2, pa1, tmp_path / "junk.dcm"])
    assert [s.series_uid for s in study.series] == ["1.2.3.5", "1.2.3.9"]
    assert [Path(i.path).name for i in study.series[0].instances] == ["a.dcm", "c.dcm"]
    assert study.series[1].instances[0].view_position == "LL"
    assert study.unreadable and study.unreadable[0][0] == "junk.dcm"
    assert study.find(study.series[1].instances[0].sop_uid) == (1, 0)


def test_calipers_measure_image_pixels_whatever_the_zoom_and_pan() -> None:
    fit = ViewTransform(scale=0.25, tx=10, ty=20)  # a 2048-wide image fitted in ~512 screen pixels
    zoomed = fit.zoomed(4.0, 300, 200).panned(-120, 35)  # wheel zoom x4 around a point, then drag
    assert zoomed.scale == pytest.approx(1.0)
    # the image point under the wheel's screen point stays put
    assert fit.zoomed(4.0, 300, 200).to_image(300, 200) == pytest.approx(fit.to_image(300, 200))
    # the same anatomy (image x 600..1500 at row 1000) drawn at both views gives the same width
    for view in (fit, zoomed):
        start, end = view.to_screen(600, 1000), view.to_screen(1500, 1003)
        caliper = Caliper.from_screen(view, start, end)
        assert caliper.width == pytest.approx(900.0) and caliper.y == pytest.approx(1000.0)
    # 90 screen pixels are 360 image pixels when fitted and 90 at 1:1
    assert Caliper.from_screen(fit, (100, 50), (190, 80)).width == pytest.approx(360.0)
    assert Caliper.from_screen(zoomed, (100, 50), (190, 80)).width == pytest.approx(90.0)
    ctr = cardiothoracic_ratio(Caliper(800, 1250, 1200), Caliper(400, 1700, 1100))
    assert ctr == pytest.approx(450 / 1300)


def test_calipers_from_the_browser_are_checked_and_clipped() -> None:
    key, shape = "1.2.3:0", (100, 200)
    sent = {"key": key, "cardiac": {"x0": -5, "x1": 80, "y": 50}, "thoracic": {"x0": 10, "x1": 999, "y": "x"}}
    calipers = read_calipers(sent, key, shape)
    assert calipers is not None and calipers.cardiac == Caliper(0.0, 80.0, 50.0) and calipers.thoracic is None
    assert read_calipers({**sent, "key": "other:0"}, key, shape) is None  # drawn on another image
    assert read_calipers({"key": key, "cardiac": {"x0": float("nan"), "x1": 1, "y": 1}}, key, shape).cardiac is None
    assert read_calipers("garbage", key, shape) is None


def test_header_masks_identifiers_unless_allowed(tmp_path, caplog) -> None:
    ds = read_header(_ct(tmp_path))
    masked = {r.name: r for r in header_rows(ds, may_see_identifiers=False)}
    for name in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate"):
        assert masked[name].masked and masked[name].value == MASK, name
    assert not masked["Modality"].masked and masked["Modality"].value == "CT"
    assert masked["StudyInstanceUID"].value == STUDY and "PixelData" not in masked
    text = " ".join(r.value for r in masked.values())
    assert "Doe" not in text and "PID-991234" not in text and "19470312" not in text and "ACC-55120" not in text
    shown = {r.name: r for r in header_rows(ds, may_see_identifiers=True)}
    assert shown["PatientID"].value == "PID-991234" and not shown["PatientID"].masked
    assert "PID-991234" not in caplog.text


def test_users_file_identifiers_flag_grants_identifiers(tmp_path) -> None:
    users = tmp_path / "users.yaml"
    add_user(users, "dr.rad", "pw-123456", role="reviewer", identifiers=True)
    add_user(users, "dr.res", "pw-123456", role="reviewer")
    assert read_users(users)["dr.rad"].identifiers and not read_users(users)["dr.res"].identifiers
    auth = Authenticator(users, failure_delay_s=0.0)
    assert auth.login("dr.rad", "pw-123456").may_see_identifiers
    assert not auth.login("dr.res", "pw-123456").may_see_identifiers
