"""Identifying study details shown to users allowed to see them (``User.may_see_identifiers``).

Accession number, study date, patient age and sex, read from the study's DICOM header at display time.
They are display only: this module never logs them, the app never caches them (not even in memory
across reruns), exports never include them and the audit trail never records them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import pydicom
from pydicom.errors import InvalidDicomError

#: The header keywords read (nothing else is parsed; pixel data is never read).
TAGS = ("AccessionNumber", "StudyDate", "PatientAge", "PatientBirthDate", "PatientSex")
COLUMNS = ("accession", "study_date", "age", "sex")


@dataclass(frozen=True)
class StudyIdentifiers:
    """What a permitted user sees of a study's identity (empty strings where the header has nothing).

    Attributes:
        accession: Accession number.
        study_date: Study date as ``YYYY-MM-DD``.
        age: Age at the study, e.g. ``45 y`` (PatientAge, else birth date to study date).
        sex: ``M``, ``F``, ``O`` or empty.
    """

    accession: str = ""
    study_date: str = ""
    age: str = ""
    sex: str = ""

    def as_row(self) -> dict[str, str]:
        """The values keyed by :data:`COLUMNS`."""
        return dict(zip(COLUMNS, (self.accession, self.study_date, self.age, self.sex), strict=True))


def _date(value: object) -> date | None:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def format_age(patient_age: str, birth: date | None, study: date | None) -> str:
    """``045Y`` -> ``45 y`` (``D``/``W``/``M`` kept as d/w/m); else whole years from birth to study date."""
    text = patient_age.strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        return f"{int(text[:3])} {text[3].lower()}"
    if birth is not None and study is not None and study >= birth:
        years = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
        return f"{years} y"
    return ""


def read_identifiers(paths: Sequence[str]) -> StudyIdentifiers:
    """The identifiers of a study from the first readable header among ``paths`` (empty when none is).

    Args:
        paths: The study's DICOM files (only the header tags in :data:`TAGS` are parsed).
    """
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(TAGS))
        except (InvalidDicomError, OSError, ValueError, AttributeError):
            continue
        study = _date(ds.get("StudyDate"))
        return StudyIdentifiers(
            accession=str(ds.get("AccessionNumber") or "").strip(),
            study_date=study.isoformat() if study else "",
            age=format_age(str(ds.get("PatientAge") or ""), _date(ds.get("PatientBirthDate")), study),
            sex=str(ds.get("PatientSex") or "").strip().upper()[:1],
        )
    return StudyIdentifiers()
