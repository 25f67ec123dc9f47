"""Raw archive -> manifest: a DICOM folder tree, report files and a label file become one table.

:func:`build_manifest` is what a site runs on its own export (``medfusion build-manifest``) and what
the demo cohort runs on its generated files. Steps:

1. :func:`~medfusion.ingest.dicom.studies.scan_dicom_folder`: group files by StudyInstanceUID (any layout);
2. optionally decode every image once (:func:`~medfusion.ingest.dicom.read.read_dicom`), so that files whose
   header reads but whose pixels do not (truncated, no pixel data, broken codestream) are rejected
   here rather than crash training later; a study left with no readable image is dropped. An
   instance held by several files (same SOPInstanceUID) uses the first copy that decodes
   (:func:`~medfusion.ingest.dicom.studies.choose_copy`); the others are rejected with the reason. Without
   decoding, the largest copy is used and the others are rejected as not verified;
3. read the reports (:func:`~medfusion.ingest.reports.read.read_reports`) and link them to studies
   (:func:`~medfusion.ingest.linkage.link_reports`); a study without a report keeps ``report_text ""``;
4. join the label file (``study_uid`` + one column per label; cells 1, 0 or empty = unknown);
5. pseudonymise the patient (PatientID, read from the DICOM header) and assign patient-level
   splits (:func:`~medfusion.ingest.manifest.assign_splits`);
6. write the manifest (:func:`~medfusion.ingest.manifest.write_manifest`).

Every input that cannot be used ends up in :attr:`ManifestBuild.rejected` with a reason free of
patient data; nothing is dropped silently. Image paths are stored absolute, frontal views
(``PA``/``AP``) first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pydicom

from medfusion.errors import ManifestError, ReportParseError
from medfusion.ingest.dicom.read import read_dicom
from medfusion.ingest.dicom.studies import (
    InstanceRef,
    StudyFiles,
    choose_copy,
    scan_dicom_folder,
)
from medfusion.ingest.label_file import (
    match_label_rows,
    read_label_file,
    study_patient_date_key,
)
from medfusion.ingest.linkage import link_reports
from medfusion.ingest.manifest import (
    LESION_MASK_COLUMN,
    SplitMethod,
    assign_splits,
    format_split_sizes,
    split_sizes,
    validate_manifest,
    write_manifest,
)
from medfusion.ingest.records import LABEL_PREFIX, Rejection, Report
from medfusion.ingest.reports.read import check_report_source, read_reports
from medfusion.privacy import pseudonym, remember_phi

logger = logging.getLogger(__name__)

#: View positions sorted first in ``image_paths``.
FRONTAL_VIEWS = ("PA", "AP")


@dataclass
class ManifestBuild:
    """Outcome of :func:`build_manifest`.

    Attributes:
        manifest: The validated manifest, one row per study, sorted by study UID.
        rejected: Every input that could not be used (files, report records, label rows, studies).
        path: Where the manifest was written, or None when ``out`` was not given.
    """

    manifest: pd.DataFrame
    rejected: list[Rejection] = field(default_factory=list)
    path: Path | None = None


def _as_paths(reports: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if reports is None:
        return []
    if isinstance(reports, (str, Path)):
        return [Path(reports)]
    return [Path(p) for p in reports]


def _label_keys(kind: str, studies: dict[str, StudyFiles]) -> dict[str, str | None]:
    """Each study's key of a label file's kind (:mod:`medfusion.ingest.label_file`): its UID, its
    accession pseudonym, or the patient-date pseudonym of its first file."""
    if kind == "study_uid":
        return {uid: uid for uid in studies}
    if kind == "accession":
        return {uid: study.accession_pseudonym for uid, study in studies.items()}
    return {uid: study_patient_date_key(study.paths[0]) for uid, study in studies.items()}


def _patient_pseudonym(path: Path, study_uid: str) -> str:
    """Pseudonymised PatientID of a file; the study's own pseudonym when the file has none.

    ``read_dicom_header`` keeps no patient identifier (by design), so the ID is read here, hashed at
    once and never stored or logged in clear.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"], force=True)
        patient_id = str(ds.get("PatientID", "") or "").strip()
    except (OSError, ValueError, TypeError, AttributeError, EOFError):  # read once already; failure = unknown
        patient_id = ""
    if patient_id:
        remember_phi(patient_id)  # redacted from any later log line that quotes it
        return pseudonym(patient_id, kind="patient")
    logger.warning("study %s has no PatientID; it forms its own split group", study_uid)
    return pseudonym(study_uid, kind="patient-unknown")


def _ordered(study: StudyFiles) -> list[InstanceRef]:
    """The study's instances, frontal views first (stable: series UID, instance number, path)."""
    return sorted(study.instances, key=lambda ref: (ref.view_position or "").upper() not in FRONTAL_VIEWS)


def _verify(studies: dict[str, StudyFiles], progress: bool) -> tuple[dict[str, list[InstanceRef]], list[Rejection]]:
    """Decode every instance (every copy of it) once; return the readable ones per study and the rejected files."""
    items = [(uid, ref) for uid in sorted(studies) for ref in _ordered(studies[uid])]
    readable: dict[str, list[InstanceRef]] = {uid: [] for uid in studies}
    rejected: list[Rejection] = []
    iterator: Iterable[tuple[str, InstanceRef]] = items
    if progress:
        from rich.progress import track

        iterator = track(items, description="Decoding images", total=len(items), transient=True)
    for uid, ref in iterator:
        choice = choose_copy(ref.candidates, read_dicom)
        rejected.extend(choice.set_aside)
        if choice.error is not None:
            rejected.append(Rejection(str(choice.kept), choice.error))
            continue
        readable[uid].append(replace(ref, path=choice.kept, copies=()))
    return readable, rejected


def _unverified(studies: dict[str, StudyFiles]) -> tuple[dict[str, list[InstanceRef]], list[Rejection]]:
    """Without decoding: each instance's first copy in trial order (the largest file); the others rejected."""
    readable: dict[str, list[InstanceRef]] = {}
    rejected: list[Rejection] = []
    for uid, study in studies.items():
        readable[uid] = []
        for ref in _ordered(study):
            reason = f"duplicate SOPInstanceUID: kept {ref.path}, the largest copy (pixels not verified)"
            rejected.extend(Rejection(str(copy), reason) for copy in ref.copies)
            readable[uid].append(replace(ref, copies=()))
    return readable, rejected


def build_manifest(
    dicom_root: str | Path,
    reports: str | Path | Sequence[str | Path] | None,
    labels_csv: str | Path,
    *,
    labels: list[str],
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split: SplitMethod = "hash",
    stratify: bool = False,
    out: str | Path | None = None,
    masks_dir: str | Path | None = None,
    verify_pixels: bool = True,
    progress: bool = False,
) -> ManifestBuild:
    """Build (and optionally write) a manifest from a raw archive.

    Args:
        dicom_root: Folder tree of DICOM files, any layout (files grouped by UIDs, never by folder).
        reports: Report source(s) (FHIR JSON/NDJSON/Bundle, CSV, ``.txt`` or folders of them), or None.
        labels_csv: CSV with ``study_uid`` and one column per label.
        labels: Label names, in manifest column order.
        seed: Split assignment seed.
        val_fraction: Expected fraction of patients in ``val``.
        test_fraction: Expected fraction of patients in ``test``.
        split: ``hash`` or ``exact`` (:func:`~medfusion.ingest.manifest.assign_splits`); the achieved
            sizes are logged.
        stratify: ``exact`` only: balance each label's positive patients across the splits.
        out: Manifest file to write (``.parquet`` or ``.csv``); None to only return it.
        masks_dir: Optional folder of per-study lesion masks named ``<study_uid>.npz``; when given, a
            ``lesion_mask_path`` column points at the study's file (None when it has none).
        verify_pixels: Decode every image once and reject those that fail, choosing among copies of
            one instance by what decodes (recommended; turn off only for archives too large to
            decode twice).
        progress: Show progress bars.

    Returns:
        The :class:`ManifestBuild`. Rejections: unreadable DICOM files (scan or decode), report
        records that cannot be parsed or linked (no study, conflicting keys, superseded by another
        report), label rows that are invalid or match no study, and studies without a label row or
        without a readable image.

    Raises:
        DicomReadError: ``dicom_root`` does not exist.
        ReportParseError: A report source is missing, of an unknown type, or a CSV without a ``report``
            column (checked before the DICOM scan).
        MissingLabelColumns: The label file lacks a study key (``study_uid``, ``accession_number``, or
            ``patient_id`` + ``study_date``) or a label column (checked before the scan).
        ManifestError: The label file cannot be read, no study is left, or ``out`` has an unknown extension.
        ValueError: Invalid split fractions.
    """
    # Errors before work: the small files' columns are checked before a long scan of the archive.
    label_file = read_label_file(labels_csv, labels)
    for source in _as_paths(reports):
        check_report_source(source)
    dicom_root = Path(dicom_root).resolve()
    scan = scan_dicom_folder(dicom_root, progress=progress)
    rejected: list[Rejection] = list(scan.rejected)

    readable, failed = _verify(scan.studies, progress) if verify_pixels else _unverified(scan.studies)
    rejected.extend(failed)

    unreadable: list[str] = []
    studies: dict[str, StudyFiles] = {}
    for uid in sorted(scan.studies):
        if readable[uid]:
            studies[uid] = scan.studies[uid]
        else:
            unreadable.append(uid)

    batch_reports: list[Report] = []
    for path in _as_paths(reports):
        try:
            batch = read_reports(path)
        except ReportParseError as exc:
            rejected.append(Rejection(exc.source, exc.reason))
            continue
        batch_reports.extend(batch.reports)
        rejected.extend(batch.rejected)
    link = link_reports({uid: s.accession_pseudonym for uid, s in studies.items()}, batch_reports)
    rejected.extend(link.unmatched_reports)
    rejected.extend(link.conflicts)

    rejected.extend(label_file.rejected)
    label_rows, unmatched = match_label_rows(label_file, _label_keys(label_file.kind, scan.studies), str(labels_csv))
    rejected.extend(unmatched)
    rejected.extend(
        Rejection(f"study {uid}", "no readable image in the study (see the file rejections)")
        for uid in unreadable
        if uid in label_rows
    )
    rejected.extend(unmatched)

    masks = Path(masks_dir).resolve() if masks_dir is not None else None
    rows = []
    for uid, study in studies.items():
        if uid not in label_rows:
            rejected.append(Rejection(f"study {uid}", f"no row in the label file {Path(labels_csv).name}"))
            continue
        refs = readable[uid]
        report = link.by_study.get(uid)
        row = {
            "study_uid": uid,
            "image_paths": [str(ref.path) for ref in refs],
            "report_text": report.text if report is not None else "",
            "split": "train",
            "patient_pseudonym": _patient_pseudonym(refs[0].path, uid),
            "accession_pseudonym": study.accession_pseudonym,
            **{f"{LABEL_PREFIX}{label}": label_rows[uid][label] for label in labels},
        }
        if masks is not None:
            mask_path = masks / f"{uid}.npz"
            row[LESION_MASK_COLUMN] = str(mask_path) if mask_path.is_file() else None
        rows.append(row)
    if not rows:
        raise ManifestError(dicom_root, "no study has both a readable image and a label row")

    frame = pd.DataFrame(rows)
    stratify_by = [f"{LABEL_PREFIX}{label}" for label in labels] if stratify else []
    frame = assign_splits(
        frame, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, method=split, stratify=stratify_by
    )
    logger.info("%s split: %s", split, format_split_sizes(split_sizes(frame)))
    written: Path | None = None
    if out is not None:
        written = write_manifest(frame, out)
        manifest = validate_manifest(frame, source=written, labels=labels)
    else:
        manifest = validate_manifest(frame, labels=labels)
    logger.info(
        "manifest: %d studies (%d without report), %d rejected input(s)",
        len(manifest),
        int((manifest["report_text"] == "").sum()),
        len(rejected),
    )
    return ManifestBuild(manifest=manifest, rejected=rejected, path=written)
