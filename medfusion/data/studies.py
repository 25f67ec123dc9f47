"""Discover DICOM files under a folder and group them by study and series (headers only).

Any layout works: the walk is recursive, files may have any extension or none. Hidden files and
folders (name starting with ``.``) and ``DICOMDIR`` files are skipped. Files that are not usable
images are kept as :class:`~medfusion.data.records.Rejection` with the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medfusion.data.dicom import read_dicom_header
from medfusion.data.records import Rejection
from medfusion.errors import DicomReadError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceRef:
    """One image file of a series.

    Attributes:
        path: The file.
        sop_uid: SOPInstanceUID (None when absent).
        instance_number: InstanceNumber (None when absent).
        frames: Number of frames.
        modality: Modality (``CR``, ``DX``, ``CT``...), or None.
        rows: Image rows.
        columns: Image columns.
        view_position: ViewPosition (``PA``, ``AP``, ``LL``...), or None.
        image_position: ImagePositionPatient ``[x, y, z]`` or None.
    """

    path: Path
    sop_uid: str | None
    instance_number: int | None
    frames: int
    modality: str | None
    rows: int
    columns: int
    view_position: str | None = None
    image_position: list[float] | None = None


@dataclass
class StudyFiles:
    """The image files of one study.

    Attributes:
        study_uid: StudyInstanceUID.
        accession_pseudonym: Pseudonymised accession number (first instance that has one), or None.
        series: SeriesInstanceUID to its instances, sorted by InstanceNumber (missing last), then path.
    """

    study_uid: str
    accession_pseudonym: str | None
    series: dict[str, list[InstanceRef]] = field(default_factory=dict)

    @property
    def instances(self) -> list[InstanceRef]:
        """All instances, series by series (series in UID order)."""
        return [ref for uid in sorted(self.series) for ref in self.series[uid]]

    @property
    def paths(self) -> list[Path]:
        """All file paths, in :attr:`instances` order."""
        return [ref.path for ref in self.instances]


@dataclass
class DicomScan:
    """Result of :func:`scan_dicom_folder`.

    Attributes:
        studies: StudyInstanceUID to its files.
        rejected: Files that could not be used, with reasons.
    """

    studies: dict[str, StudyFiles] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def n_instances(self) -> int:
        """Number of accepted image files."""
        return sum(len(refs) for study in self.studies.values() for refs in study.series.values())


def iter_candidate_files(root: str | Path) -> Iterator[Path]:
    """Yield every non-hidden file under ``root`` except DICOMDIR files, in sorted order.

    Args:
        root: A folder (or a single file, yielded as is).
    """
    root = Path(root)
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            yield Path(folder) / name


def scan_dicom_folder(root: str | Path, *, progress: bool = False) -> DicomScan:
    """Find the DICOM images under ``root`` and group them by study and series.

    Only headers are read (no pixel data). A file is rejected when it is not DICOM, is not an
    image (no Rows/Columns), lacks StudyInstanceUID or SeriesInstanceUID, or repeats a
    SOPInstanceUID already seen in the same study.

    Args:
        root: Folder to walk recursively (or a single file).
        progress: Show a rich progress bar on the terminal.

    Returns:
        A :class:`DicomScan`; studies keyed by StudyInstanceUID.

    Raises:
        DicomReadError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise DicomReadError(root, "folder not found")
    files = list(iter_candidate_files(root))
    scan = DicomScan()
    seen_sops: dict[tuple[str, str], Path] = {}
    for path in _maybe_progress(files, progress):
        try:
            meta = read_dicom_header(path)
        except DicomReadError as exc:
            scan.rejected.append(Rejection(source=str(path), reason=exc.reason))
            continue
        study_uid, series_uid, sop_uid = meta["study_uid"], meta["series_uid"], meta["sop_uid"]
        if not study_uid:
            scan.rejected.append(Rejection(source=str(path), reason="missing StudyInstanceUID"))
            continue
        if not series_uid:
            scan.rejected.append(Rejection(source=str(path), reason="missing SeriesInstanceUID"))
            continue
        if sop_uid:
            first = seen_sops.setdefault((study_uid, sop_uid), path)
            if first != path:
                scan.rejected.append(Rejection(source=str(path), reason=f"duplicate SOPInstanceUID (same as {first})"))
                continue
        study = scan.studies.get(study_uid)
        if study is None:
            study = scan.studies[study_uid] = StudyFiles(study_uid=study_uid, accession_pseudonym=None)
        if meta["accession_pseudonym"]:
            if study.accession_pseudonym is None:
                study.accession_pseudonym = meta["accession_pseudonym"]
            elif study.accession_pseudonym != meta["accession_pseudonym"]:
                logger.warning("study %s has instances with different accession numbers; keeping the first", study_uid)
        study.series.setdefault(series_uid, []).append(
            InstanceRef(
                path=path,
                sop_uid=sop_uid,
                instance_number=meta["instance_number"],
                frames=meta["frames"],
                modality=meta["modality"],
                rows=meta["rows"],
                columns=meta["columns"],
                view_position=meta["view_position"],
                image_position=meta["image_position"],
            )
        )
    for study in scan.studies.values():
        for refs in study.series.values():
            refs.sort(key=_instance_key)
    logger.info(
        "scanned %d file(s) under %s: %d study(ies), %d image(s), %d rejected",
        len(files),
        root,
        len(scan.studies),
        scan.n_instances,
        len(scan.rejected),
    )
    return scan


def _instance_key(ref: InstanceRef) -> tuple[bool, int, str]:
    return (ref.instance_number is None, ref.instance_number or 0, str(ref.path))


def _maybe_progress(files: list[Path], progress: bool) -> Iterable[Path]:
    if not progress:
        return files
    from rich.progress import track

    return track(files, description="Scanning DICOM headers", total=len(files), transient=True)
