"""Discover DICOM files under a folder and group them by study and series (headers only).

Any layout works: the walk is recursive, files may have any extension or none. Hidden files and
folders (name starting with ``.``) and ``DICOMDIR`` files are skipped. Files that are not usable
images are kept as :class:`~medfusion.ingest.records.Rejection` with the reason.

Several files may hold the same instance (same StudyInstanceUID and SOPInstanceUID: a re-sent or
partly transferred copy). Discovery reads headers only, so it cannot tell which copy is intact: it
keeps them all as one :class:`InstanceRef` (its :attr:`~InstanceRef.candidates`, largest file first,
then path) and the choice is made where pixels are decoded, by :func:`choose_copy` (the first copy
that decodes; every other copy is set aside with the reason). The folder scoring source does it in
its worker processes (:func:`resolve_copies`), the manifest builder when it verifies pixels. Path
order never decides.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.header_reader import BoundedHeaderReader
from medfusion.ingest.dicom.read import read_dicom_header
from medfusion.ingest.records import DicomImage, Rejection

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
        copies: Other files holding the same instance (same StudyInstanceUID and SOPInstanceUID),
            after ``path`` in trial order (:func:`copy_order`); empty for most instances. The header
            values above are ``path``'s.
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
    copies: tuple[Path, ...] = ()

    @property
    def candidates(self) -> tuple[Path, ...]:
        """Every file holding this instance, in trial order (``path`` first)."""
        return (self.path, *self.copies)


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
        """All files, in :attr:`instances` order, every copy of an instance included (trial order)."""
        return [path for ref in self.instances for path in ref.candidates]


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
        """Number of accepted image instances (copies of one instance count once)."""
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


def scan_dicom_folder(
    root: str | Path, *, progress: bool = False, max_bytes: int | None = None, file_timeout_s: float | None = None
) -> DicomScan:
    """Find the DICOM images under ``root`` and group them by study and series.

    Only headers are read (no pixel data). A file is rejected when it is not DICOM, is larger than
    ``max_bytes``, is not an image (no Rows/Columns), or lacks StudyInstanceUID or
    SeriesInstanceUID. Files repeating a SOPInstanceUID of the same study are kept together as the
    copies of one instance (see the module docstring).

    Args:
        root: Folder to walk recursively (or a single file).
        progress: Show a rich progress bar on the terminal.
        max_bytes: Bound on each file's size, checked before reading it (and on a deflated header's
            inflated bytes); None: the reader's default (:func:`~medfusion.ingest.dicom.limits.byte_limit`).
        file_timeout_s: Bound on the wall time of each header read: headers are then read in a child
            process (:class:`~medfusion.ingest.dicom.header_reader.BoundedHeaderReader`) and a file over the
            bound is rejected. None: read in this process, bounded in bytes only.

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
    found: dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]] = {}  # (study, SOP or path) -> copies
    with ExitStack() as stack:
        read_header: Callable[[Path], dict[str, Any]] = functools.partial(read_dicom_header, max_bytes=max_bytes)
        if file_timeout_s is not None and files:
            read_header = stack.enter_context(BoundedHeaderReader(file_timeout_s, max_bytes=max_bytes))
        for path in _maybe_progress(files, progress):
            try:
                meta = read_header(path)
            except DicomReadError as exc:
                scan.rejected.append(Rejection(source=str(path), reason=exc.reason))
                continue
            if not meta["study_uid"]:
                scan.rejected.append(Rejection(source=str(path), reason="missing StudyInstanceUID"))
                continue
            if not meta["series_uid"]:
                scan.rejected.append(Rejection(source=str(path), reason="missing SeriesInstanceUID"))
                continue
            found.setdefault((meta["study_uid"], meta["sop_uid"] or f"file:{path}"), []).append((path, meta))
    for (study_uid, _), copies in found.items():
        by_path = dict(copies)
        order = copy_order(list(by_path))
        meta = by_path[order[0]]
        study = scan.studies.get(study_uid)
        if study is None:
            study = scan.studies[study_uid] = StudyFiles(study_uid=study_uid, accession_pseudonym=None)
        if meta["accession_pseudonym"]:
            if study.accession_pseudonym is None:
                study.accession_pseudonym = meta["accession_pseudonym"]
            elif study.accession_pseudonym != meta["accession_pseudonym"]:
                logger.warning("study %s has instances with different accession numbers; keeping the first", study_uid)
        study.series.setdefault(meta["series_uid"], []).append(
            InstanceRef(
                path=order[0],
                sop_uid=meta["sop_uid"],
                instance_number=meta["instance_number"],
                frames=meta["frames"],
                modality=meta["modality"],
                rows=meta["rows"],
                columns=meta["columns"],
                view_position=meta["view_position"],
                image_position=meta["image_position"],
                copies=tuple(order[1:]),
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


# ------------------------------------------------------------------------------ copies of one instance


def copy_order(paths: Sequence[Path]) -> list[Path]:
    """The order in which copies of one instance are tried: largest file first, then path.

    A truncated or partly transferred copy is smaller than the intact one, so the intact copy is
    usually tried (and kept) first; the order only saves work: what decodes decides.
    """
    return sorted(paths, key=lambda p: (-_size(p), str(p)))


@dataclass
class CopyChoice:
    """Which copy of one instance to use.

    Attributes:
        kept: The copy to use: the first in trial order that decodes (the first tried when none does).
        set_aside: Every other copy, with why it was not kept.
        error: Why ``kept`` does not decode either, when no copy decodes; else None.
    """

    kept: Path
    set_aside: list[Rejection] = field(default_factory=list)
    error: str | None = None


def choose_copy(candidates: Sequence[Path], decode: Callable[[Path], DicomImage]) -> CopyChoice:
    """Choose the copy of one instance to use by what decodes, never by path order.

    Every copy is decoded (a single one too), so that each one set aside carries its own reason.

    Args:
        candidates: Files holding the same instance, in trial order (:func:`copy_order`).
        decode: Reads one file (e.g. :func:`~medfusion.ingest.dicom.read.read_dicom` with the caller's bounds);
            raises :class:`~medfusion.errors.DicomReadError` when it cannot.

    Returns:
        The :class:`CopyChoice`.
    """
    kept: Path | None = None
    kept_pixels: Any = None  # (F, C, H, W) tensor of the kept copy
    errors: dict[Path, str] = {}
    same_image: dict[Path, bool] = {}  # copies that decode too: same pixels as the kept one?
    for path in candidates:
        try:
            pixels = decode(path).pixels
        except DicomReadError as exc:
            errors[path] = exc.reason
            continue
        if kept is None:
            kept, kept_pixels = path, pixels
        else:
            same_image[path] = bool(pixels.equal(kept_pixels))
    if kept is None:
        kept = candidates[0]
        return CopyChoice(
            kept=kept,
            set_aside=[
                Rejection(str(p), f"duplicate SOPInstanceUID: no copy decodes (kept {kept}); this copy: {errors[p]}")
                for p in candidates[1:]
            ],
            error=errors[kept],
        )
    set_aside = []
    for path in candidates:
        if path == kept:
            continue
        if path in errors:
            reason = f"duplicate SOPInstanceUID: kept {kept}, which decodes; this copy: {errors[path]}"
        elif same_image[path]:
            reason = f"duplicate SOPInstanceUID: same image as {kept}, which was kept"
        else:
            reason = (
                f"duplicate SOPInstanceUID: kept {kept}, a larger or first copy; this copy decodes to another image"
            )
        set_aside.append(Rejection(source=str(path), reason=reason))
    return CopyChoice(kept=kept, set_aside=set_aside)


def resolve_copies(
    paths: Sequence[str | Path], decode: Callable[[Path], DicomImage], *, max_bytes: int | None = None
) -> tuple[list[Path], list[Rejection]]:
    """One file per instance from a study's files, copies chosen by :func:`choose_copy`.

    For callers holding a flat file list (a scoring worker given a study's locator): the headers
    say which files hold the same instance (same StudyInstanceUID and SOPInstanceUID). A file
    whose header cannot be read is kept as is (decoding it later names the problem).

    Args:
        paths: The files (any order).
        decode: See :func:`choose_copy`.
        max_bytes: Byte bound of the header reads (None: the reader's default).

    Returns:
        The files to use (in the order of ``paths``, each instance where its first copy was) and
        the copies set aside.
    """
    files = [Path(p) for p in paths]
    if len(files) < 2:
        return files, []
    groups: dict[tuple[str, str], list[Path]] = {}
    for path in files:
        try:
            meta = read_dicom_header(path, max_bytes=max_bytes)
            key = (meta["study_uid"] or "", meta["sop_uid"] or f"file:{path}")
        except DicomReadError:
            key = ("", f"file:{path}")
        groups.setdefault(key, []).append(path)
    kept: list[Path] = []
    set_aside: list[Rejection] = []
    for copies in groups.values():
        if len(copies) == 1:  # the common case: nothing to choose, decoded later by the caller
            kept.append(copies[0])
            continue
        choice = choose_copy(copy_order(copies), decode)
        kept.append(choice.kept)
        set_aside.extend(choice.set_aside)
    return kept, set_aside


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _instance_key(ref: InstanceRef) -> tuple[bool, int, str]:
    return (ref.instance_number is None, ref.instance_number or 0, str(ref.path))


def _maybe_progress(files: list[Path], progress: bool) -> Iterable[Path]:
    if not progress:
        return files
    from rich.progress import track

    return track(files, description="Scanning DICOM headers", total=len(files), transient=True)
