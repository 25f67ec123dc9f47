"""Study queue, drafts, PACS links and identifiers: the pure parts of moving between studies."""

from __future__ import annotations

from datetime import date

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medfusion.errors import ConfigError
from medfusion.review.identifiers import StudyIdentifiers, format_age, read_identifiers
from medfusion.review.navigation import neighbour, study_path, unsaved_labels
from medfusion.review.settings import ReviewSettings, check_viewer_url_template

OHIF = "https://pacs.example/ohif/viewer?StudyInstanceUIDs={study_uid}"


def test_neighbours_in_the_queue() -> None:
    queue = ["1.2.1", "1.2.2", "1.2.3"]
    assert (neighbour(queue, "1.2.2", -1), neighbour(queue, "1.2.2", 1)) == ("1.2.1", "1.2.3")
    assert neighbour(queue, "1.2.1", -1) is None and neighbour(queue, "1.2.3", 1) is None
    assert neighbour(queue, "9.9", 1) is None
    assert study_path("1.2.3") == "study?study=1.2.3"


def test_a_draft_is_unsaved_until_it_equals_the_saved_decision() -> None:
    drafts = {"nodule": "agree", "effusion": "disagree", "mass": None, "edema": "agree"}
    saved = {"nodule": "agree", "effusion": "agree"}
    assert unsaved_labels(drafts, saved) == ["effusion", "edema"]
    assert unsaved_labels({}, saved) == [] and unsaved_labels({"mass": None}, {}) == []


def test_viewer_link_template(tmp_path) -> None:
    settings = ReviewSettings.create(tmp_path, viewer_url_template=OHIF)
    assert settings.viewer_url("1.2.840.1") == "https://pacs.example/ohif/viewer?StudyInstanceUIDs=1.2.840.1"
    assert ReviewSettings.from_env(settings.to_env()).viewer_url_template == OHIF
    assert ReviewSettings.create(tmp_path).viewer_url("1.2") is None
    for bad in (
        "https://pacs/viewer",
        "ftp://pacs/{study_uid}",
        "https://pacs/{study_uid}/{patient_id}",
        "https://p/{",
    ):
        with pytest.raises(ConfigError, match="viewer URL template"):
            check_viewer_url_template(bad)
    with pytest.raises(ConfigError):
        ReviewSettings.create(tmp_path, viewer_url_template="https://pacs/viewer")


def test_age_formats() -> None:
    assert format_age("045Y", None, None) == "45 y"
    assert format_age("006M", None, None) == "6 m"
    assert format_age("", date(1980, 6, 2), date(2021, 6, 1)) == "40 y"
    assert format_age("", date(1980, 6, 2), date(2021, 6, 2)) == "41 y"
    assert format_age("", None, date(2021, 6, 2)) == ""


def _header(path, **tags) -> str:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def test_identifiers_come_from_the_first_readable_header(tmp_path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    full = _header(
        tmp_path / "a.dcm", AccessionNumber="ACC123 ", StudyDate="20210411", PatientAge="052Y", PatientSex="F"
    )
    ids = read_identifiers([str(junk), str(tmp_path / "missing.dcm"), full])
    assert ids == StudyIdentifiers("ACC123", "2021-04-11", "52 y", "F")
    derived = _header(tmp_path / "b.dcm", StudyDate="20210411", PatientBirthDate="19700501", PatientSex="M")
    assert read_identifiers([derived]).as_row() == {
        "accession": "",
        "study_date": "2021-04-11",
        "age": "50 y",
        "sex": "M",
    }
    assert read_identifiers([str(junk)]) == StudyIdentifiers()
