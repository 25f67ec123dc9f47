"""One study's DICOM SR: validated by dciodvfy (0 errors) and dsrdump, read back by highdicom, and every
value, code, threshold, provenance item, evidence reference and patient/study attribute checked."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.dicom_sr.codes import PRIVATE_SCHEME, CodeMap, FindingCode
from medfusion.dicom_sr.source import SourceStudy, read_source_study
from medfusion.dicom_sr.write import build_sr, sr_uids, write_sr
from medfusion.errors import DicomReadError, MedfusionError
from medfusion.results import Provenance, ResultRow
from tests.dicom_sr.validators import dciodvfy_errors, dsrdump

LABELS = ("nodule", "cardiomegaly", "lung_opacity")
PROBS = np.array([0.81, 0.12, 0.5])
THRESHOLDS = np.array([0.5, 0.3, 0.5])  # decisions: present, absent, present (p == t counts)
PROVENANCE = Provenance(model_name="medfusion-demo", model_version="7", model_id="demo-hybrid-0a1b2c3d")
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate")


def write_study(folder: Path, n: int = 3, **spec: str) -> tuple[list[Path], str]:
    """``n`` DX instances of one study in two series, with patient identifiers; (paths, study UID)."""
    study = pydicom.uid.generate_uid()
    series = [pydicom.uid.generate_uid(), pydicom.uid.generate_uid()]
    fields = {
        "patient_name": "DOE^JANE",
        "patient_id": "MRN-42-TEST",
        "patient_birth_date": "19700102",
        "patient_sex": "F",
        "accession_number": "ACC-0099",
        "study_date": "20240315",
        **spec,
    }
    paths = [
        write_dicom(
            folder / f"img{i}.dcm",
            np.full((8, 8), i, np.uint16),
            DicomSpec(study, series[i % 2], modality="DX", view_position="PA", instance_number=i + 1, **fields),
        )
        for i in range(n)
    ]
    return paths, study


def row_of(study_uid: str) -> ResultRow:
    return ResultRow(
        labels=LABELS, probabilities=PROBS, thresholds=THRESHOLDS, provenance=PROVENANCE, study_uid=study_uid
    )


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Path], SourceStudy]:
    """An SR written for a 3-instance study: (SR file, source files, source headers)."""
    paths, study = write_study(tmp_path / "study")
    source = read_source_study(paths)
    out = tmp_path / "sr.dcm"
    write_sr(build_sr(row_of(study), source), out)
    return out, paths, source


def image_groups(sr: hd.sr.Comprehensive3DSR) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """The measurement groups of a re-read SR (TID 1501), in document order."""
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    return report.get_image_measurement_groups()


def texts(group: Dataset, code: str) -> list[str]:
    """The TEXT values of the items named DCM ``code`` directly under a measurement group."""
    return [
        str(item.TextValue)
        for item in group[0].ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == code
    ]


def test_sr_passes_dciodvfy_and_dsrdump(written: tuple[Path, list[Path], SourceStudy]) -> None:
    path, _, _ = written
    assert dciodvfy_errors(path) == []
    tree = dsrdump(path)
    assert "Imaging Measurement Report" in tree and tree.count('"Measurement Group"') == len(LABELS)
    assert "(786838002,SCT," in tree and "(8186001,SCT," in tree and f"(lung_opacity,{PRIVATE_SCHEME}," in tree
    assert "Verification Flag   : UNVERIFIED" in tree and "Completion Flag     : COMPLETE" in tree


def test_highdicom_reads_back_codes_values_thresholds_provenance(
    written: tuple[Path, list[Path], SourceStudy],
) -> None:
    path, _, _ = written
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert (sr.VerificationFlag, sr.CompletionFlag, sr.PreliminaryFlag) == ("UNVERIFIED", "COMPLETE", "PRELIMINARY")
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    found = report.get_image_measurement_groups()
    assert [str(g.tracking_identifier) for g in found] == list(LABELS)
    expected_codes = [("786838002", "SCT"), ("8186001", "SCT"), ("lung_opacity", PRIVATE_SCHEME)]
    for group, label, p, t, (value, scheme) in zip(found, LABELS, PROBS, THRESHOLDS, expected_codes, strict=True):
        assert group.finding_type is not None
        assert (group.finding_type.value, group.finding_type.scheme_designator) == (value, scheme), label
        by_name = {m.name.value: m for m in group.get_measurements()}
        assert by_name["122157"].value == pytest.approx(p) and by_name["122411"].value == pytest.approx(t)
        assert by_name["122157"].unit.value == "{probability}" and by_name["122157"].unit.scheme_designator == "UCUM"
        (evaluation,) = group.get_qualitative_evaluations()
        assert evaluation.name.value == value
        assert evaluation.value.value == ("52101004" if p >= t else "272519000")  # Present / Absent
        # TID 4019 Algorithm Identification: name (111001), version (111003), parameters (111002)
        assert (texts(group, "111001"), texts(group, "111003")) == (["medfusion-demo"], ["7"])
        assert set(texts(group, "111002")) == {
            "model_id=demo-hybrid-0a1b2c3d",
            f"medfusion_version={PROVENANCE.medfusion_version}",
            "status=UNVERIFIED",
        }
    # the private scheme is declared
    schemes = [item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence]
    assert PRIVATE_SCHEME in schemes


def test_evidence_and_patient_study_modules_equal_the_source(written: tuple[Path, list[Path], SourceStudy]) -> None:
    path, paths, source = written
    sr = hd.sr.srread(path)
    originals = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    expected = {(o.StudyInstanceUID, o.SeriesInstanceUID, o.SOPInstanceUID, o.SOPClassUID) for o in originals}
    evidence = sr.get_evidence()
    assert len(evidence) == 3 and set(evidence) == expected
    for keyword in (*IDENTIFYING, "StudyInstanceUID"):
        assert str(sr[keyword].value) == str(originals[0][keyword].value), keyword
    # every measurement group references the three source images
    for group in sr.content.get_image_measurement_groups():
        refs = {s.referenced_sop_instance_uid for s in group.source_images}
        assert refs == {o.SOPInstanceUID for o in originals}
    # the SR is a new series of the source study, with deterministic UIDs
    series_uid, sop_uid = sr_uids(row_of(source.study_uid))
    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID, sr.Modality) == (series_uid, sop_uid, "SR")
    assert sr.SeriesInstanceUID not in {o.SeriesInstanceUID for o in originals}
    assert sr_uids(row_of(source.study_uid)) == (series_uid, sop_uid)
    other = ResultRow(LABELS, PROBS, THRESHOLDS, Provenance("medfusion-demo", "8", "x"), study_uid=source.study_uid)
    assert sr_uids(other)[1] != sop_uid


def test_a_site_code_map_file_replaces_codes(tmp_path: Path) -> None:
    codes_file = tmp_path / "codes.yaml"
    codes_file.write_text(
        'nodule: {value: "427359005", scheme: SCT, meaning: "Solitary nodule of lung"}\n'
        'lung_opacity: {value: "RID28530", scheme: RADLEX, meaning: "opacity"}\n',
        encoding="utf-8",
    )
    codes = CodeMap.from_file(codes_file)
    assert codes["nodule"] == FindingCode("427359005", "SCT", "Solitary nodule of lung")
    assert codes["cardiomegaly"] == FindingCode("8186001", "SCT", "Cardiomegaly")  # default kept
    assert codes["support_devices"].scheme == PRIVATE_SCHEME
    paths, study = write_study(tmp_path / "study", n=1)
    sr = build_sr(row_of(study), read_source_study(paths), codes)
    out = tmp_path / "sr.dcm"
    write_sr(sr, out)
    assert dciodvfy_errors(out) == []
    back = hd.sr.srread(out)
    found = [
        (g.finding_type.value, g.finding_type.scheme_designator) for g in back.content.get_image_measurement_groups()
    ]
    assert found == [("427359005", "SCT"), ("8186001", "SCT"), ("RID28530", "RADLEX")]
    assert "CodingSchemeIdentificationSequence" not in back  # no private code left


def test_bad_code_map_and_bad_inputs_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "codes.json"
    bad.write_text('{"nodule": {"value": "1", "scheme": "SCT"}}', encoding="utf-8")
    with pytest.raises(MedfusionError, match="needs value, scheme and meaning"):
        CodeMap.from_file(bad)
    paths, study = write_study(tmp_path / "a", n=1)
    other_paths, _ = write_study(tmp_path / "b", n=1)
    with pytest.raises(DicomReadError, match="another study"):
        read_source_study([*paths, *other_paths])
    source = read_source_study(paths)
    with pytest.raises(MedfusionError, match="not a valid DICOM UID"):
        build_sr(row_of("../../etc/passwd"), source)  # it would also name the SR file
    with pytest.raises(MedfusionError, match="source headers are of study"):
        build_sr(row_of("1.2.3"), source)
    nan = ResultRow(LABELS, np.array([np.nan, 0.1, 0.2]), THRESHOLDS, PROVENANCE, study_uid=study)
    with pytest.raises(MedfusionError, match="not finite"):
        build_sr(nan, source)


def test_missing_type2_patient_attributes_are_written_empty(tmp_path: Path) -> None:
    paths, study = write_study(tmp_path / "study", n=1)
    ds = pydicom.dcmread(paths[0])
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        del ds[keyword]
    ds.save_as(paths[0])
    out = tmp_path / "sr.dcm"
    write_sr(build_sr(row_of(study), read_source_study(paths)), out)
    assert dciodvfy_errors(out) == []
    back = pydicom.dcmread(out)
    assert back.PatientID == "MRN-42-TEST" and back.PatientBirthDate == "" and back.AccessionNumber == ""
    assert isinstance(back, Dataset)
