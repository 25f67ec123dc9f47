"""Label files keyed the way a hospital has them: by StudyInstanceUID, accession number, or patient + study date.

A label CSV has one column per label (``1``, ``0``, or empty = unknown) and names its studies by the
first of these it has:

* ``study_uid``: the StudyInstanceUID;
* ``accession_number``: compared as a pseudonym, like reports (:func:`medfusion.privacy.pseudonym`,
  ``kind="acc"``): the number itself is hashed as it is read and never kept;
* ``patient_id`` + ``study_date`` (``YYYYMMDD`` or ``YYYY-MM-DD``): hashed together as one pseudonym
  (``kind="patient-date"``), compared with the same pseudonym of each study's first image.

:func:`read_label_file` reads the file; :func:`match_label_rows` finds each row's study. A row whose
key matches no study, or several (two studies of one patient on one day, a reused accession number), is
rejected with the reason; nothing is guessed.

Imports: numpy, pandas, pydicom, :mod:`medfusion.errors`, :mod:`medfusion.privacy`,
:mod:`medfusion.ingest.records`, :mod:`medfusion.ingest.csv_table`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom

from medfusion.errors import ManifestError
from medfusion.ingest.csv_table import read_text_csv
from medfusion.ingest.records import Rejection
from medfusion.privacy import pseudonym, remember_phi

KeyKind = Literal["study_uid", "accession", "patient_date"]
#: Key kinds and their columns, in order of preference.
KEY_COLUMNS: dict[KeyKind, tuple[str, ...]] = {
    "study_uid": ("study_uid",),
    "accession": ("accession_number",),
    "patient_date": ("patient_id", "study_date"),
}
KEY_DESCRIPTION = "study_uid (or accession_number, or patient_id and study_date)"
_VALUES = {"1": 1.0, "1.0": 1.0, "true": 1.0, "0": 0.0, "0.0": 0.0, "false": 0.0, "": np.nan}
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


class MissingLabelColumns(ManifestError):
    """A label file lacks a study key (:data:`KEY_DESCRIPTION`) or some of the labels asked for.

    Args:
        hint: What to do about it, appended to the message (the command line says how to pass labels).

    Attributes:
        missing: The columns it lacks.
        labels: The labels asked for.
        columns: The columns it has.
    """

    def __init__(
        self, path: str | Path, missing: list[str], labels: list[str], columns: list[str], *, hint: str = ""
    ) -> None:
        self.missing, self.labels, self.columns = missing, labels, columns
        super().__init__(
            path,
            f"label file lacks column(s): {', '.join(missing)} (labels asked for: {', '.join(labels)}; "
            f"columns in the file: {', '.join(columns)})" + (f"; {hint}" if hint else ""),
        )


@dataclass
class LabelFile:
    """A read label file.

    Attributes:
        kind: How its rows name their studies.
        rows: Key (a StudyInstanceUID, or a pseudonym for the other kinds) -> label -> 1.0 / 0.0 / NaN.
        rejected: Rows that cannot be used (``file:row N``, N from 1) with the reason.
    """

    kind: KeyKind
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)


def patient_date_key(patient_id: str, study_date: str) -> str | None:
    """The pseudonym of a patient's study day; None when the date is not ``YYYYMMDD`` / ``YYYY-MM-DD``."""
    match = _DATE.match(study_date.strip())
    if not patient_id.strip() or match is None:
        return None
    return pseudonym(f"{patient_id.strip()}|{''.join(match.groups())}", kind="patient-date")


def _key_kind(columns: list[str]) -> KeyKind | None:
    return next((kind for kind, cols in KEY_COLUMNS.items() if set(cols) <= set(columns)), None)


def read_label_file(path: str | Path, labels: list[str]) -> LabelFile:
    """Read a label CSV (see the module docstring for the key columns).

    Cells ``1``/``0`` (also ``1.0``/``0.0``, ``true``/``false``) are accepted; any other value rejects
    the row. A repeated key keeps the first row and rejects the others. Accession numbers and patient
    IDs are hashed as they are read; rejections name rows, never those values.

    Args:
        path: The CSV file (UTF-8).
        labels: Label columns required.

    Raises:
        MissingLabelColumns: The file lacks a key or a label column.
        ManifestError: The file is missing or not a readable UTF-8 CSV.
    """
    path = Path(path)
    table = read_text_csv(path, ManifestError, "label file")
    columns = [str(c) for c in table.columns]
    kind = _key_kind(columns)
    missing = ([] if kind else [KEY_DESCRIPTION]) + [c for c in labels if c not in columns]
    if kind is None or missing:
        raise MissingLabelColumns(path, missing, labels, columns)
    out = LabelFile(kind)
    for n, row in enumerate(table.to_dict(orient="records"), start=1):
        source = f"{path}:row {n}"
        key = _row_key(kind, row)
        if key is None:
            out.rejected.append(Rejection(source, f"empty or malformed {' + '.join(KEY_COLUMNS[kind])}"))
            continue
        if key in out.rows:
            out.rejected.append(Rejection(source, f"duplicate row for {_describe(kind, key)} (first row kept)"))
            continue
        parsed: dict[str, float] = {}
        for label in labels:
            cell = str(row[label]).strip().lower()
            if cell not in _VALUES:
                out.rejected.append(Rejection(source, f"{label} value {row[label]!r} is not 1, 0 or empty"))
                break
            parsed[label] = _VALUES[cell]
        else:
            out.rows[key] = parsed
    return out


def _row_key(kind: KeyKind, row: Mapping[Any, object]) -> str | None:
    if kind == "study_uid":
        return str(row["study_uid"]).strip() or None
    if kind == "accession":
        accession = str(row["accession_number"]).strip()
        remember_phi(accession)
        return pseudonym(accession, kind="acc") if accession else None
    patient_id, study_date = str(row["patient_id"]), str(row["study_date"])
    remember_phi(patient_id.strip(), study_date.strip())
    return patient_date_key(patient_id, study_date)


def _describe(kind: KeyKind, key: str) -> str:
    return {"study_uid": "study", "accession": "accession", "patient_date": "patient and day"}[kind] + f" {key}"


def study_patient_date_key(path: Path) -> str | None:
    """The patient-date pseudonym of a DICOM file (PatientID + StudyDate, hashed at once), or None."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "StudyDate"], force=True)
    except (OSError, ValueError, TypeError, AttributeError, EOFError):
        return None
    patient_id, study_date = str(ds.get("PatientID", "") or ""), str(ds.get("StudyDate", "") or "")
    remember_phi(patient_id.strip(), study_date.strip())
    return patient_date_key(patient_id, study_date)


def match_label_rows(
    labels: LabelFile, study_keys: Mapping[str, str | None], source: str
) -> tuple[dict[str, dict[str, float]], list[Rejection]]:
    """Each label row's study.

    Args:
        labels: The read label file.
        study_keys: StudyInstanceUID -> its key of ``labels.kind`` (None when the study has none).
        source: The label file, named in rejections.

    Returns:
        StudyInstanceUID -> labels, and a rejection per row matching no study or several.
    """
    by_key: dict[str, list[str]] = defaultdict(list)
    for uid, key in study_keys.items():
        if key is not None:
            by_key[key].append(uid)
    matched: dict[str, dict[str, float]] = {}
    rejected: list[Rejection] = []
    for key, values in labels.rows.items():
        uids = by_key.get(key, [])
        if len(uids) == 1:
            matched[uids[0]] = values
        elif not uids:
            rejected.append(Rejection(source, f"label row for {_describe(labels.kind, key)} matches no DICOM study"))
        else:
            rejected.append(
                Rejection(
                    source, f"label row for {_describe(labels.kind, key)} matches {len(uids)} studies; none labelled"
                )
            )
    return matched, rejected
