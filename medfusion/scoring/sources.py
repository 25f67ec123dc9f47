"""Where studies to score come from: a folder tree of DICOM files or a DICOMweb server, plus reports.

A :class:`StudySource` finds studies in the main process (:meth:`~StudySource.discover`, streaming
cheap :class:`StudyRef` records) and gives a worker process the study's DICOM files
(:meth:`~StudySource.materialize`). Sources are pickled into worker processes, so they hold only
plain settings (open connections lazily).

A source may also expose ``rejected: list[Rejection]``, files found during discovery that cannot be
used (filled while :meth:`~StudySource.discover` runs); the job dead-letters them.

Reports are looked up in a :class:`ReportIndex` by study UID, then by accession pseudonym, with the
linkage rules of :func:`medfusion.ingest.linkage.link_reports` (most final status wins, then the later
report; a report whose study UID and accession number disagree is refused).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from medfusion.errors import ReportParseError
from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.ingest.linkage import link_reports
from medfusion.ingest.records import Rejection, Report
from medfusion.ingest.reports.read import read_reports
from medfusion.scoring.inputs import check_readable, source_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyRef:
    """A study found by discovery: cheap, picklable, no pixel data.

    Attributes:
        study_uid: StudyInstanceUID.
        locator: Folder source: the study's DICOM file paths; DICOMweb: ``()`` (fetched by UID).
        report_key: Key into the report index (accession pseudonym), None when unknown.
    """

    study_uid: str
    locator: tuple[str, ...]
    report_key: str | None


@runtime_checkable
class StudySource(Protocol):
    """A place to score studies from (see the module docstring)."""

    name: str  # "folder" | "dicomweb" (recorded in the ledger)

    def discover(self) -> Iterator[StudyRef]:
        """Stream the studies (main process)."""
        ...

    def materialize(self, ref: StudyRef, workdir: Path) -> list[Path]:
        """The study's local DICOM files (worker process); may write into ``workdir``."""
        ...


@dataclass
class FolderSource:
    """Studies in a folder tree of DICOM files, any layout, grouped by StudyInstanceUID.

    Only headers are read during discovery (:func:`medfusion.ingest.dicom.studies.scan_dicom_folder`), in a
    child process that spends at most ``file_timeout_s`` on one file; files that are not usable
    DICOM images, or whose header read runs over the bound, land in :attr:`rejected`. A study's
    locator lists every file of it, copies of one instance included (the worker chooses the copy
    that decodes).

    Args:
        root: The folder.
        file_timeout_s: Bound on one header read, seconds; None reads headers in this process
            (bounded in bytes only).
    """

    root: Path
    name: str = "folder"
    rejected: list[Rejection] = field(default_factory=list)
    file_timeout_s: float | None = 60.0

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    def discover(self) -> Iterator[StudyRef]:
        """Yield one :class:`StudyRef` per study, in StudyInstanceUID order.

        Raises:
            DicomReadError: The folder does not exist.
        """
        scan = scan_dicom_folder(self.root, file_timeout_s=self.file_timeout_s)
        self.rejected = list(scan.rejected)
        for uid in sorted(scan.studies):
            study = scan.studies[uid]
            yield StudyRef(uid, tuple(str(p) for p in study.paths), study.accession_pseudonym)

    def materialize(self, ref: StudyRef, workdir: Path) -> list[Path]:
        """The study's files, where they are (nothing is copied)."""
        return [Path(p) for p in ref.locator]


def open_source(spec: str, *, file_timeout_s: float | None = 60.0) -> StudySource:
    """A source from a command-line spec: an ``http(s)://`` URL (DICOMweb) or a folder.

    ``file_timeout_s`` bounds each header read of a folder's discovery (see :class:`FolderSource`).

    Raises:
        DicomReadError: ``spec`` is neither a URL nor a readable folder.
    """
    path = source_folder(spec)
    if path is None:
        from medfusion.scoring.dicomweb import DicomwebSource

        return DicomwebSource(spec)
    return FolderSource(path, file_timeout_s=file_timeout_s)


class ReportIndex:
    """Reports by study UID and by accession pseudonym.

    Args:
        reports: Parsed reports, in chronological / input order.
        rejected: Report records that could not be read.
    """

    def __init__(self, reports: list[Report], rejected: list[Rejection] | None = None) -> None:
        self.rejected = list(rejected or [])
        self._by_uid: dict[str, list[int]] = {}
        self._by_acc: dict[str, list[int]] = {}
        self._reports = reports
        for i, report in enumerate(reports):
            if report.study_uid:
                self._by_uid.setdefault(report.study_uid, []).append(i)
            if report.accession_pseudonym:
                self._by_acc.setdefault(report.accession_pseudonym, []).append(i)

    @classmethod
    def from_path(cls, path: str | Path | None) -> ReportIndex:
        """Read reports (FHIR NDJSON / Bundle / JSON, CSV, ``.txt``, or a folder of them); None: no reports.

        Raises:
            ReportParseError: ``path`` does not exist, cannot be read, or (a single file) cannot be parsed at all.
        """
        if path is None:
            return cls([])
        check_readable(Path(path), ReportParseError)
        batch = read_reports(path)
        log.info(
            "report index: %d report(s), %d rejected record(s)",
            len(batch.reports),
            len(batch.rejected),
        )
        return cls(batch.reports, batch.rejected)

    def __len__(self) -> int:
        return len(self._reports)

    def lookup(self, study_uid: str, report_key: str | None) -> Report | None:
        """The report of a study (by UID, then accession pseudonym ``report_key``), or None."""
        candidates = sorted(set(self._by_uid.get(study_uid, [])) | set(self._by_acc.get(report_key or "", [])))
        if not candidates:
            return None
        # No per-call summary line. (This once raised and restored the linkage logger's level around
        # the call: every setLevel clears the cache of every logger of the process, 0.3 ms a call with
        # torch and transformers loaded, twice a study on the job's one serial thread, and a level
        # change other threads' linkage calls saw.)
        link = link_reports({study_uid: report_key}, [self._reports[i] for i in candidates], summary=False)
        return link.by_study.get(study_uid)

    def text(self, ref: StudyRef) -> str:
        """The report text of a study, ``""`` when it has none."""
        report = self.lookup(ref.study_uid, ref.report_key)
        return report.text if report is not None else ""
