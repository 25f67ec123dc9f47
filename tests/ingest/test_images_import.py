"""The PNG/JPEG importer (medfusion.ingest.images_import): stable UIDs, bit depth, colour, bounds, bad rows."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from medfusion.ingest.images_import import ImageRejected, ImageTableError, import_images, read_image
from tests.dicom_sr.validators import dciodvfy_errors

COLUMNS = ["image", "patient_id", "study_id", "view", "report", "nodule"]


def _table(folder: Path, rows: list[list[object]], columns: list[str] = COLUMNS) -> Path:
    path = folder / "table.csv"
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def _by_study(out: Path) -> dict[str, pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in (out / "dicom").glob("*.dcm")]
    return {str(ds.AccessionNumber): ds for ds in datasets}


def test_16_bit_values_are_kept_and_8_bit_stays_8_bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (48, 40), dtype=np.uint16)
    shallow = rng.integers(0, 256, (30, 20), dtype=np.uint8)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.fromarray(shallow).save(tmp_path / "shallow.png")
    table = _table(tmp_path, [["deep.png", "P1", "S1", "PA", "r", 1], ["shallow.png", "P2", "S2", "ll", "r", 0]])
    result = import_images(table, tmp_path / "out", modality="DX")
    assert result.rejected == []
    files = _by_study(tmp_path / "out")
    d, s = files["S1"], files["S2"]
    assert (d.BitsAllocated, d.BitsStored, d.PhotometricInterpretation) == (16, 16, "MONOCHROME2")
    np.testing.assert_array_equal(d.pixel_array, deep)
    assert (s.BitsAllocated, s.BitsStored) == (8, 8)
    np.testing.assert_array_equal(s.pixel_array, shallow)
    assert (d.ViewPosition, s.ViewPosition) == ("PA", "LL")
    assert d.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert (d.Modality, s.Modality) == ("DX", "DX")
    for ds in (d, s):
        assert dciodvfy_errors(Path(ds.filename)) == []


def test_rgb_and_palette_become_gray_by_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    palette = Image.fromarray(np.ones((8, 8), np.uint8), "P")
    palette.putpalette([0, 0, 0, 200, 100, 50])  # index 1 -> the same colour
    palette.save(tmp_path / "pal.png")
    expected = round(200 * 0.299 + 100 * 0.587 + 50 * 0.114)  # 124
    for name in ("rgb.png", "pal.png"):
        gray = read_image(tmp_path / name)
        assert gray.dtype == np.uint8 and gray.shape == (8, 8)
        assert np.abs(gray.astype(int) - expected).max() <= 1, name


def test_uids_are_stable_per_row_and_distinct_across_rows(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(tmp_path / "a.png")
    rows = [["a.png", "P1", "S1", "PA", "r", 1], ["a.png", "P1", "S2", "PA", "r", 0]]
    first = import_images(_table(tmp_path, rows), tmp_path / "one")
    import_images(_table(tmp_path, rows[::-1]), tmp_path / "two")  # order does not matter
    assert len(set(first.study_uids)) == 2
    one, two = _by_study(tmp_path / "one"), _by_study(tmp_path / "two")
    for study in ("S1", "S2"):
        for attr in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert one[study][attr].value == two[study][attr].value
            assert pydicom.uid.UID(one[study][attr].value).is_valid
    assert one["S1"].StudyInstanceUID != one["S2"].StudyInstanceUID
    assert one["S1"].SOPInstanceUID != one["S2"].SOPInstanceUID


def test_bad_rows_are_rejected_with_reasons_and_the_rest_imported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "trunc.png").write_bytes((tmp_path / "ok.png").read_bytes()[:2000])  # cut inside IDAT
    (tmp_path / "text.png").write_text("not an image")
    Image.new("1", (8000, 8000)).save(tmp_path / "bomb.png")  # 64 Mpx, a few kB on disk
    rows = [
        ["ok.png", "PATIENT-SECRET-1", "S1", "PA", "Normal.", 0],
        ["missing.png", "PATIENT-SECRET-2", "S2", "PA", "x", 1],
        ["trunc.png", "PATIENT-SECRET-3", "S3", "PA", "x", 1],
        ["text.png", "PATIENT-SECRET-4", "S4", "PA", "x", 1],
        ["bomb.png", "PATIENT-SECRET-5", "S5", "PA", "x", 1],
        ["ok.png", "PATIENT-SECRET-6", "S1", "PA", "x", 1],
        ["ok.png", "", "S7", "PA", "x", 1],
    ]
    with caplog.at_level(logging.DEBUG):
        result = import_images(_table(tmp_path, rows), tmp_path / "out")
    assert len(result.study_uids) == 1
    reasons = {r.source: r.reason for r in result.rejected}
    assert reasons["table.csv:row 2"] == "image file not found"
    assert "truncated" in reasons["table.csv:row 3"]
    assert reasons["table.csv:row 4"] == "not an image Pillow can read"
    assert reasons["table.csv:row 5"].startswith("image too large (8000x8000 pixels")
    assert reasons["table.csv:row 6"] == "duplicate study_id (same as row 1)"
    assert reasons["table.csv:row 7"] == "no patient_id"
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert list(rejected["row"]) == [f"table.csv:row {n}" for n in range(2, 8)]
    # the patient id is in the DICOM file only: not in the CSVs written, not in the log
    assert _by_study(tmp_path / "out")["S1"].PatientID == "PATIENT-SECRET-1"
    for name in ("reports.csv", "labels.csv", "rejected.csv"):
        assert "SECRET" not in (tmp_path / "out" / name).read_text()
    assert "SECRET" not in caplog.text
    labels = pd.read_csv(tmp_path / "out" / "labels.csv")
    assert list(labels.columns) == ["study_uid", "nodule"]
    assert list(labels["study_uid"]) == result.study_uids
    reports = pd.read_csv(tmp_path / "out" / "reports.csv")
    assert list(reports["report"]) == ["Normal."]


def test_bounds_are_checked_before_decoding(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ImageRejected, match=r"64x64 pixels > 1000"):
        read_image(tmp_path / "a.png", max_pixels=1000)
    with pytest.raises(ImageRejected, match=r"too large .* bytes > 10"):
        read_image(tmp_path / "a.png", max_bytes=10)


def test_a_table_without_the_required_columns_is_an_error(tmp_path: Path) -> None:
    table = _table(tmp_path, [["a.png", "S1"]], ["image", "study_id"])
    with pytest.raises(ImageTableError, match=r"lacks column.*patient_id"):
        import_images(table, tmp_path / "out")


def test_the_command_reports_a_bad_table_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medfusion.cli import app

    missing = CliRunner().invoke(app, ["import-images", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1
    assert "image table not found" in missing.output and "Traceback" not in missing.output
    table = _table(tmp_path, [["a.png", "S1"]], ["image", "study_id"])
    lacking = CliRunner().invoke(app, ["import-images", str(table), "--out", str(tmp_path / "o")])
    assert lacking.exit_code == 1
    assert "lacks column(s): patient_id" in lacking.output

    bad = CliRunner().invoke(app, ["import-images", str(table), "--out", str(tmp_path / "o"), "--modality", "x-ray"])
    assert bad.exit_code == 1
    assert "--modality" in bad.output and "not a DICOM code string" in bad.output
