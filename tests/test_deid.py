"""De-identification (``medfusion.deid``) and log redaction (``medfusion.privacy``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medfusion.deid import HASHED, REMOVED, deidentify_dataset, deidentify_record
from medfusion.privacy import REDACTED, forget_phi, install_log_redaction, pseudonym, redact, remember_phi


@pytest.fixture(autouse=True)
def _clean_memory() -> Iterator[None]:
    forget_phi()
    yield
    forget_phi()


def _identified() -> Dataset:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "MF1234567"
    ds.PatientBirthDate = "19500102"
    ds.AccessionNumber = "ACC7654321"
    ds.InstitutionName = "St Elsewhere"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.OtherPatientIDs = ["X1", "X2"]
    ds.StudyDate, ds.StudyTime = "20230405", "101010"
    item = Dataset()
    item.PatientName = "DOE^JANE"
    item.AccessionNumber = "ACC7654321"
    ds.ReferencedStudySequence = Sequence([item])
    ds.add_new(0x00091001, "LO", "private MF1234567")
    return ds


def test_dataset_basic_profile_subset() -> None:
    ds = _identified()
    out = deidentify_dataset(ds)
    for keyword in ("PatientName", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "OtherPatientIDs",
                    "StudyDate", "StudyTime"):  # fmt: skip
        assert keyword not in out, keyword
    assert out.PatientID == pseudonym("MF1234567", kind="patient")
    assert f"acc-{out.AccessionNumber}" == pseudonym("ACC7654321", kind="acc")  # SH: digest of the reports' key
    assert "PatientName" not in out.ReferencedStudySequence[0]
    assert out.ReferencedStudySequence[0].AccessionNumber == out.AccessionNumber
    assert 0x00091001 not in out  # private tags removed
    assert out.PatientIdentityRemoved == "YES" and "PS3.15" in out.DeidentificationMethod
    assert out.StudyInstanceUID == ds.StudyInstanceUID and out.Modality == ds.Modality  # Retain UIDs / device
    assert ds.PatientName == "DOE^JANE"  # the input is untouched
    text = str(out).lower()
    for value in ("doe", "mf1234567", "acc7654321", "19500102", "elsewhere", "house"):
        assert value not in text, value


def test_deidentified_dataset_still_writes_and_reads(tmp_path) -> None:
    from medfusion.ingest.dicom.read import read_dicom

    path = tmp_path / "deid.dcm"
    deidentify_dataset(_identified()).save_as(path, enforce_file_format=True)
    assert read_dicom(path).pixels.shape == (1, 1, 128, 128)


def test_record_policy() -> None:
    row = {"patient_id": "MF1", "PatientName": "DOE^JANE", "accession_number": "A1", "birth_date": "19500102",
           "study_uid": "1.2.3", "prob_effusion": 0.4}  # fmt: skip
    out = deidentify_record(row)
    assert out == {"patient_id": pseudonym("MF1", kind="patient"), "accession_number": pseudonym("A1", kind="acc"),
                   "study_uid": "1.2.3", "prob_effusion": 0.4}  # fmt: skip
    assert set(HASHED).isdisjoint(REMOVED)


def test_redact_whole_values_parts_and_paths() -> None:
    remember_phi("DOE^JANE", "MF1234567", "ACC7654321", None, "", "ab")
    assert redact("patient DOE^JANE (jane doe) id MF1234567") == f"patient {REDACTED} ({REDACTED} {REDACTED}) id {REDACTED}"
    assert redact("/data/acc7654321_scan.dcm failed") == f"/data/{REDACTED}_scan.dcm failed"
    assert redact("ab is too short to remember") == "ab is too short to remember"
    assert redact("nothing to hide here") == "nothing to hide here"


def test_log_records_are_redacted_before_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    remember_phi("MF1234567", "DOE^JANE")
    log = logging.getLogger("some.third.party")
    with caplog.at_level(logging.DEBUG):
        log.debug("value %r of %s", "MF1234567", "DOE^JANE")
        try:
            raise ValueError("bad PatientID MF1234567")
        except ValueError:
            log.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert "MF1234567" not in text and "DOE" not in text
    assert REDACTED in caplog.records[0].getMessage()


def test_vocabulary_leaves_out_words_of_few_reports(tmp_path) -> None:
    """The tiny BERT's vocabulary is saved with the model: a name in one report must not enter it."""
    from medfusion.models.tokenizer import train_wordpiece_tokenizer

    reports = ["Lungs are clear."] * 6 + ["Patient Halvorsen: lungs are clear."]
    vocab = train_wordpiece_tokenizer(reports, 500, tmp_path / "a", min_reports=5).get_vocab()
    assert "lungs" in vocab and "halvorsen" not in vocab and "patient" not in vocab
    assert "halvorsen" in train_wordpiece_tokenizer(reports, 500, tmp_path / "b").get_vocab()  # default: every word
