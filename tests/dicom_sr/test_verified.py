"""A clinician's review as a VERIFIED SR: built from the UNVERIFIED one (no image read), the reviewed
labels with the clinician's values, the clinician as observer and verifier, superseding the original;
validated by dciodvfy and dsrdump, read back by highdicom."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from medfusion.dicom_sr.source import read_source_study, source_from_sr
from medfusion.dicom_sr.write import Verification, build_sr, write_sr
from medfusion.errors import MedfusionError
from tests.dicom_sr.test_write import IDENTIFYING, LABELS, row_of, write_study
from tests.dicom_sr.validators import dciodvfy_errors, dsrdump

AT = dt.datetime(2026, 11, 30, 14, 5, 6, tzinfo=dt.UTC)


def test_a_verified_sr_supersedes_the_unverified_one_with_the_clinicians_values(tmp_path: Path) -> None:
    paths, study = write_study(tmp_path / "study")
    unverified_path = tmp_path / "unverified.dcm"
    write_sr(build_sr(row_of(study), read_source_study(paths)), unverified_path)
    unverified = pydicom.dcmread(unverified_path)
    # the model said nodule present, cardiomegaly absent; the clinician: nodule absent, cardiomegaly present
    verification = Verification(
        observer="Smith^Alice",
        organization="Radiology, St Elsewhere",
        verified_at=AT,
        decisions={"nodule": False, "cardiomegaly": True},
        predecessor=unverified,
    )
    out = tmp_path / "verified.dcm"
    write_sr(build_sr(row_of(study), source_from_sr(unverified), verification=verification), out)

    assert dciodvfy_errors(out) == []
    tree = dsrdump(out)
    assert "Verification Flag   : VERIFIED" in tree and tree.count('"Measurement Group"') == 2
    sr = hd.sr.srread(out)
    assert (sr.VerificationFlag, sr.PreliminaryFlag, sr.CompletionFlag) == ("VERIFIED", "FINAL", "COMPLETE")
    (verifier,) = sr.VerifyingObserverSequence
    assert (str(verifier.VerifyingObserverName), verifier.VerifyingOrganization) == (
        "Smith^Alice",
        "Radiology, St Elsewhere",
    )
    assert verifier.VerificationDateTime.startswith("20261130140506")
    (predecessor,) = sr.PredecessorDocumentsSequence
    ref = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == unverified.SOPInstanceUID
    assert sr.SOPInstanceUID != unverified.SOPInstanceUID and sr.SeriesInstanceUID == unverified.SeriesInstanceUID
    groups = sr.content.get_image_measurement_groups()
    values = {str(g.tracking_identifier): g.get_qualitative_evaluations()[0].value.value for g in groups}
    assert values == {"nodule": "272519000", "cardiomegaly": "52101004"}  # Absent, Present: the clinician's
    assert "Smith^Alice" in tree  # the person observer, next to the model as device observer
    for keyword in (*IDENTIFYING, "StudyInstanceUID"):
        assert str(sr[keyword].value) == str(unverified[keyword].value), keyword
    assert sr.get_evidence() == hd.sr.srread(unverified_path).get_evidence()

    again = build_sr(row_of(study), source_from_sr(unverified), verification=verification)
    assert again.SOPInstanceUID == sr.SOPInstanceUID  # the same verification is the same object
    later = Verification("Smith^Alice", "Radiology", AT + dt.timedelta(minutes=5), {"nodule": True}, unverified)
    assert build_sr(row_of(study), source_from_sr(unverified), verification=later).SOPInstanceUID != sr.SOPInstanceUID


def test_unknown_labels_and_an_unsigned_verification_are_refused(tmp_path: Path) -> None:
    paths, study = write_study(tmp_path / "study", n=1)
    source = read_source_study(paths)
    unverified = build_sr(row_of(study), source)
    for decisions in ({"pneumothorax": True}, {}):
        with pytest.raises(MedfusionError, match="verified labels must be some of the model's"):
            build_sr(row_of(study), source, verification=Verification("A", "R", AT, decisions, unverified))
    for observer, organization in (("A", " "), ("", "R")):
        with pytest.raises(MedfusionError, match="observer's name and organization"):
            verification = Verification(observer, organization, AT, {"nodule": True}, unverified)
            build_sr(row_of(study), source, verification=verification)
    assert set(LABELS) >= {"nodule", "cardiomegaly"}
