"""The comment check: identifiers (header names and IDs, MRN-like numbers, dates, phones, e-mails) flagged.

Clinical text is not.
"""

from __future__ import annotations

import numpy as np
import pytest

from medfusion.datasets.demo.dicom_writer import DicomSpec, write_dicom
from medfusion.review.comment_guard import (
    comment_findings,
    describe,
    identifier_findings,
    name_parts,
)

NAMES = ["SMITH^JOHN^PAUL"]
IDS = ["PX-4471", "ACC-TQZ"]


@pytest.mark.parametrize(
    ("comment", "kinds"),
    [
        ("Patient John Smith MRN 12345", {"patient name", "ID number"}),
        ("paul smith again, see prior", {"patient name"}),
        ("SMITH", {"patient name"}),
        ("pt px-4471 recalled", {"patient ID"}),
        ("accession ACC-TQZ.", {"patient ID"}),
        ("MRN: 443", {"ID number"}),
        ("ID A1234 on the request", {"ID number"}),
        ("hospital number 0012345678", {"ID number"}),
        ("compared with 12/03/2021", {"date"}),
        ("compared with 3-12-21", {"date"}),
        ("prior of 2021-03-12 unchanged", {"date"}),
        ("prior 20210312 unchanged", {"date", "ID number"}),
        ("since 03/2021", {"date"}),
        ("seen on 12 March 2021", {"date"}),
        ("seen on 3rd of May 2020", {"date"}),
        ("seen March 12", {"date"}),
        ("seen Sept 2019", {"date"}),
        ("DOB 4/5/61", {"date", "ID number"}),
        ("call 555-123-4567 with result", {"phone number"}),
        ("call (555) 123 4567", {"phone number"}),
        ("ext 555-1234", {"phone number"}),
        ("on +44 20 7946 0958", {"phone number"}),
        ("mail j.smith@example.org", {"email address", "patient name"}),
        ("mail reviewer@example.org", {"email address"}),
    ],
)
def test_identifiers_are_flagged_by_kind(comment: str, kinds: set[str]) -> None:
    assert set(identifier_findings(comment, NAMES, IDS)) == kinds


@pytest.mark.parametrize(
    "comment",
    [
        "mild cardiomegaly, agree",
        "Agree. May represent atelectasis; nodule may be artefact",
        "3 mm nodule RUL, T11-T12 compression, 1.5 x 2.0 cm",
        "compared with the prior from March, stable since 2019",
        "grade 2 effusion, 2019-2021 stable, 120 ml",
        "disagree: the line is a skin fold (C5-C6), see PA and lateral",
        "study 1.2.840.10008.5.1.4.1.1.7 has a second series",
        "",
    ],
)
def test_clinical_comments_are_not_flagged(comment: str) -> None:
    assert identifier_findings(comment, NAMES, IDS) == ()


def test_name_parts_take_family_given_middle_of_every_group_not_prefix_or_suffix() -> None:
    assert name_parts(["O'BRIEN-KELLY^ANNE^MARIE^DR^JR=OBRIEN^ANNE", "LI^X"]) == {
        "brien",
        "kelly",
        "anne",
        "marie",
        "obrien",
        "li",
    }


def test_findings_name_kinds_and_never_the_text() -> None:
    message = describe(identifier_findings("Patient John Smith MRN 12345", NAMES, IDS))
    assert "an ID number and a patient name" in message
    assert not {"john", "smith", "12345"} & set(message.lower().replace(".", " ").split())


def test_the_study_header_supplies_the_names_and_ids(tmp_path) -> None:
    pixels = np.zeros((8, 8), dtype=np.uint16)
    spec = DicomSpec(
        study_uid="1.2.3",
        series_uid="1.2.3.1",
        patient_name="WAYNE^BRUCE",
        patient_id="GC-77",
        accession_number="ACC-QQ",
    )
    path = write_dicom(tmp_path / "a.dcm", pixels, spec)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    paths = [str(tmp_path / "junk.dcm"), str(path)]  # an unreadable header is skipped, not fatal
    assert comment_findings("Bruce, see you", paths) == ("patient name",)
    assert comment_findings("gc-77 recalled", paths) == ("patient ID",)
    assert comment_findings("acc-qq", paths) == ("patient ID",)
    assert comment_findings("mild cardiomegaly, agree", paths) == ()
    assert comment_findings("Bruce, see you", []) == ()  # without the header the name is an ordinary word
    assert comment_findings("   ", paths) == ()
