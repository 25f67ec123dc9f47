"""Copies of one instance (same SOPInstanceUID in several files): the copy that decodes is used,
whatever the path order and the file sizes; every other copy is recorded with its reason.

Real files written by :func:`medfusion.datasets.demo.dicom_writer.write_dicom`, broken the way partial
transfers and re-sends break them (cut short, overwritten codestream).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.ingest.archive import build_manifest
from medfusion.ingest.dicom.read import read_dicom
from medfusion.ingest.dicom.studies import (
    choose_copy,
    copy_order,
    resolve_copies,
    scan_dicom_folder,
)

STUDY = "1.2.826.0.1.3680043.8.498.77"
SERIES = STUDY + ".1"
SOP = STUDY + ".1.1"


def _image() -> np.ndarray:
    y, x = np.mgrid[0:48, 0:64]
    return (x * 40 + y * 20).astype(np.int64)


def _intact(path: Path, pixels: np.ndarray | None = None, **spec: object) -> Path:
    defaults: dict[str, object] = {"study_uid": STUDY, "series_uid": SERIES, "sop_uid": SOP}
    defaults.update(spec)
    return write_dicom(path, _image() if pixels is None else pixels, DicomSpec(**defaults))  # type: ignore[arg-type]


def _truncated(intact: Path, path: Path) -> Path:
    """A partly transferred copy: the pixel data is cut short (the header is whole)."""
    data = intact.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) - 2000])
    return path


def _garbage(path: Path) -> Path:
    """An RLE copy whose codestream was overwritten: header fine, pixels undecodable."""
    src = _intact(path, transfer_syntax=RLELossless)
    ds = pydicom.dcmread(src)
    frame = bytearray(ds.PixelData)
    frame[16:-16] = b"\xff" * (len(frame) - 32)
    ds.PixelData = bytes(frame)
    ds.save_as(path)
    return path


@pytest.mark.parametrize("broken_first", [True, False], ids=["broken_sorts_first", "broken_sorts_last"])
def test_the_intact_copy_is_kept_whatever_the_path_order(tmp_path: Path, broken_first: bool) -> None:
    intact = _intact(tmp_path / ("b" if broken_first else "a") / "img.dcm")
    broken = _truncated(intact, tmp_path / ("a" if broken_first else "b") / "img.dcm")
    garbage = _garbage(tmp_path / "c" / "img.dcm")

    scan = scan_dicom_folder(tmp_path)

    assert scan.rejected == [] and scan.n_instances == 1
    [ref] = scan.studies[STUDY].series[SERIES]
    assert set(ref.candidates) == {intact, broken, garbage}
    assert ref.path == intact  # the largest copy is tried first
    kept, set_aside = resolve_copies(scan.studies[STUDY].paths, read_dicom)
    assert kept == [intact]
    reasons = {Path(r.source): r.reason for r in set_aside}
    assert set(reasons) == {broken, garbage}
    assert reasons[broken].startswith(f"duplicate SOPInstanceUID: kept {intact}, which decodes; this copy: ")
    assert "truncated pixel data" in reasons[broken]
    assert reasons[garbage].startswith(f"duplicate SOPInstanceUID: kept {intact}, which decodes; this copy: ")


def test_a_larger_broken_copy_loses_to_a_smaller_copy_that_decodes(tmp_path: Path) -> None:
    """Size only orders the trials: the native copy cut short is larger than the intact RLE copy."""
    flat = np.full((48, 64), 100, dtype=np.int64)  # RLE stores it in a few hundred bytes
    intact = _intact(tmp_path / "z_rle.dcm", flat, transfer_syntax=RLELossless)
    broken = _truncated(_intact(tmp_path / "tmp.dcm"), tmp_path / "a_native.dcm")
    (tmp_path / "tmp.dcm").unlink()
    assert broken.stat().st_size > intact.stat().st_size
    assert copy_order([intact, broken]) == [broken, intact]

    choice = choose_copy(copy_order([intact, broken]), read_dicom)

    assert choice.kept == intact and choice.error is None
    [aside] = choice.set_aside
    assert aside.source == str(broken) and "truncated pixel data" in aside.reason


def test_identical_and_different_copies_that_both_decode(tmp_path: Path) -> None:
    first = _intact(tmp_path / "a.dcm")
    same = tmp_path / "b.dcm"
    shutil.copy(first, same)
    other = write_dicom(
        tmp_path / "c.dcm", _image()[::-1], DicomSpec(study_uid=STUDY, series_uid=SERIES, sop_uid=SOP, bits_stored=16)
    )

    choice = choose_copy(copy_order([first, same, other]), read_dicom)

    assert choice.error is None
    reasons = {Path(r.source): r.reason for r in choice.set_aside}
    assert reasons[same if choice.kept == first else first] == (
        f"duplicate SOPInstanceUID: same image as {choice.kept}, which was kept"
    )
    assert reasons[other].endswith("this copy decodes to another image")


def test_when_no_copy_decodes_the_first_is_kept_with_its_reason(tmp_path: Path) -> None:
    intact = _intact(tmp_path / "tmp.dcm")
    broken = _truncated(intact, tmp_path / "a.dcm")
    garbage = _garbage(tmp_path / "b.dcm")
    intact.unlink()

    choice = choose_copy(copy_order([broken, garbage]), read_dicom)

    assert choice.kept == copy_order([broken, garbage])[0]
    assert choice.error is not None
    [aside] = choice.set_aside
    assert aside.reason.startswith(f"duplicate SOPInstanceUID: no copy decodes (kept {choice.kept}); this copy: ")


def test_resolve_copies_keeps_distinct_instances_in_order_without_decoding(tmp_path: Path) -> None:
    a = _intact(tmp_path / "2.dcm", sop_uid=SOP + ".2", instance_number=2)
    b = _intact(tmp_path / "1.dcm", sop_uid=SOP + ".1", instance_number=1)
    broken = _truncated(b, tmp_path / "0.dcm")  # a copy of b that would fail to decode

    def no_decode(path: Path) -> object:
        raise AssertionError(f"decoded {path}: instances without copies need no decode here")

    assert resolve_copies([a, b], no_decode) == ([a, b], [])
    kept, set_aside = resolve_copies([a, broken, b], read_dicom)
    assert kept == [a, b] and [r.source for r in set_aside] == [str(broken)]


@pytest.mark.parametrize("broken_first", [True, False], ids=["broken_sorts_first", "broken_sorts_last"])
def test_the_manifest_uses_the_copy_that_decodes(tmp_path: Path, broken_first: bool) -> None:
    dicom = tmp_path / "dicom"
    uids = [f"{STUDY}.{i}" for i in range(6)]
    for i, uid in enumerate(uids):
        _intact(dicom / f"s{i}" / "img.dcm", study_uid=uid, sop_uid=f"{uid}.9", patient_id=f"P{i}")
    victim = dicom / "s0" / "img.dcm"
    moved = dicom / "s0" / ("z_img.dcm" if broken_first else "0_img.dcm")
    victim.rename(moved)
    broken = _truncated(moved, dicom / "s0" / "img.dcm")
    labels = tmp_path / "labels.csv"
    labels.write_text("study_uid,nodule\n" + "".join(f"{uid},{i % 2}\n" for i, uid in enumerate(uids)))

    build = build_manifest(dicom, None, labels, labels=["nodule"], val_fraction=0.2, test_fraction=0.2)

    row = build.manifest.set_index("study_uid").loc[uids[0]]
    assert list(row["image_paths"]) == [str(moved)]
    [aside] = [r for r in build.rejected if r.source == str(broken)]
    assert aside.reason.startswith(f"duplicate SOPInstanceUID: kept {moved}, which decodes; this copy: ")
    assert "truncated pixel data" in aside.reason

    unverified = build_manifest(dicom, None, labels, labels=["nodule"], verify_pixels=False)
    row = unverified.manifest.set_index("study_uid").loc[uids[0]]
    assert list(row["image_paths"]) == [str(moved)]  # the largest copy, not the first path
    assert any(r.source == str(broken) and "pixels not verified" in r.reason for r in unverified.rejected)
