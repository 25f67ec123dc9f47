"""Label files keyed the way a hospital has them (StudyInstanceUID, accession number, patient + study
date) give the same labels; ambiguous or unmatched keys are rejected by row without identifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.ingest.archive import build_manifest
from medfusion.ingest.label_file import MissingLabelColumns, read_label_file

#: (patient id, accession number, study date, nodule) per study; the last two share an accession
#: number (a reused number) and the first two are one patient on two days.
STUDIES = [
    ("PAT-001", "ACC-1001", "20240301", 1),
    ("PAT-001", "ACC-1002", "20240415", 0),
    ("PAT-002", "ACC-1003", "20240302", 1),
    ("PAT-003", "ACC-1004", "20240303", 0),
    ("PAT-004", "ACC-1004", "20240309", 1),
]


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[str]]:
    uids = []
    for i, (patient, accession, date, _) in enumerate(STUDIES):
        uid = pydicom.uid.generate_uid()
        spec = DicomSpec(uid, f"{uid}.1", patient_id=patient, accession_number=accession, study_date=date)
        write_dicom(tmp_path / "dicom" / f"s{i}.dcm", np.full((16, 16), i, np.uint16), spec)
        uids.append(uid)
    return tmp_path / "dicom", uids


def _labels(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _build(dicom: Path, labels: Path):
    return build_manifest(dicom, None, labels, labels=["nodule"], verify_pixels=False)


def test_the_three_keys_give_the_same_labels(archive: tuple[Path, list[str]], tmp_path: Path) -> None:
    dicom, uids = archive
    by_uid = _labels(
        tmp_path / "uid.csv", "study_uid,nodule", [f"{u},{s[3]}" for u, s in zip(uids, STUDIES, strict=True)]
    )
    by_day = _labels(
        tmp_path / "day.csv",
        "patient_id,study_date,nodule",
        [f"{p},{d[:4]}-{d[4:6]}-{d[6:]},{y}" for p, _, d, y in STUDIES],  # ISO dates as spreadsheets write them
    )
    by_accession = _labels(tmp_path / "acc.csv", "accession_number,nodule", [f"{a},{y}" for _, a, _, y in STUDIES])
    expected = {u: float(s[3]) for u, s in zip(uids, STUDIES, strict=True)}
    for labels in (by_uid, by_day):
        built = _build(dicom, labels)
        assert dict(zip(built.manifest["study_uid"], built.manifest["y_nodule"], strict=True)) == expected, labels.name
        assert built.rejected == []
    built = _build(dicom, by_accession)
    assert dict(zip(built.manifest["study_uid"], built.manifest["y_nodule"], strict=True)) == {
        u: y for u, y in list(expected.items())[:3]
    }  # the reused accession number labels neither of its studies
    reasons = [r.reason for r in built.rejected]
    assert any(
        r.startswith("label row for accession acc-") and r.endswith("matches 2 studies; none labelled") for r in reasons
    )
    text = repr(built.rejected)
    for patient, accession, date, _ in STUDIES:
        assert patient not in text and accession not in text and date not in text


def test_bad_keys_are_rejected_by_row_and_a_missing_key_says_which_columns_work(tmp_path: Path) -> None:
    bad = _labels(
        tmp_path / "bad.csv", "patient_id,study_date,nodule", ["PAT-9,2024-13-45x,1", ",20240101,0", "PAT-9,20240101,1"]
    )
    read = read_label_file(bad, ["nodule"])
    assert read.kind == "patient_date" and len(read.rows) == 1
    assert [r.reason for r in read.rejected] == ["empty or malformed patient_id + study_date"] * 2
    no_key = _labels(tmp_path / "nokey.csv", "mrn,nodule", ["PAT-9,1"])
    with pytest.raises(MissingLabelColumns, match=r"study_uid \(or accession_number, or patient_id and study_date\)"):
        read_label_file(no_key, ["nodule"])
