"""The study's series and instances, from the files the scoring job read (headers only).

The scoring output's ledger keeps every local file of a study (:func:`medfusion.scoring.study_inputs`),
the lateral view and other series included; here their PHI-free headers
(:func:`~medfusion.ingest.dicom.read.read_dicom_header`) are grouped by series and ordered by
InstanceNumber so the viewer can step through them. Unreadable files are listed with their reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.read import read_dicom_header


@dataclass(frozen=True)
class Instance:
    """One image file of the study.

    Attributes:
        path: The file.
        sop_uid: SOPInstanceUID.
        instance_number: InstanceNumber, or None.
        frames: NumberOfFrames (1 for single-frame files).
        view_position: ViewPosition (``PA``, ``LL``...), or None.
        modality: Modality, or None.
    """

    path: str
    sop_uid: str
    instance_number: int | None
    frames: int
    view_position: str | None
    modality: str | None

    @property
    def label(self) -> str:
        """Short description for a selector (no identifier)."""
        parts = [f"#{self.instance_number}" if self.instance_number is not None else "#?"]
        if self.view_position:
            parts.append(self.view_position)
        if self.frames > 1:
            parts.append(f"{self.frames} frames")
        return " ".join(parts)


@dataclass(frozen=True)
class Series:
    """A series of the study and its instances (by InstanceNumber, then SOP UID)."""

    series_uid: str
    modality: str | None
    instances: tuple[Instance, ...]

    @property
    def label(self) -> str:
        """Short description for a selector: modality, views, instance count."""
        views = sorted({i.view_position for i in self.instances if i.view_position})
        n = len(self.instances)
        return f"{self.modality or '?'} {'/'.join(views)} ({n} image{'s' if n != 1 else ''})".replace("  ", " ")


@dataclass(frozen=True)
class StudyImages:
    """Every readable image of a study, by series, and the files that could not be read."""

    series: tuple[Series, ...]
    unreadable: tuple[tuple[str, str], ...] = ()

    def find(self, sop_uid: str | None) -> tuple[int, int] | None:
        """(series index, instance index) of an instance, or None."""
        for s, series in enumerate(self.series):
            for i, instance in enumerate(series.instances):
                if instance.sop_uid == sop_uid:
                    return s, i
        return None


def list_study(paths: Sequence[str | Path]) -> StudyImages:
    """Group a study's files by series (headers only, bounded as every header read).

    Copies of one instance (same SOP Instance UID) are listed once, the first path kept. Series are
    ordered by first appearance of their frontal view (PA/AP) first, then by UID.
    """
    by_series: dict[str, list[Instance]] = {}
    modality: dict[str, str | None] = {}
    seen: set[str] = set()
    unreadable: list[tuple[str, str]] = []
    for path in paths:
        try:
            meta = read_dicom_header(path)
        except DicomReadError as err:
            unreadable.append((Path(path).name, err.reason))
            continue
        sop = meta.get("sop_uid") or str(path)
        if sop in seen:
            continue
        seen.add(sop)
        series_uid = meta.get("series_uid") or "(no series UID)"
        modality.setdefault(series_uid, meta.get("modality"))
        by_series.setdefault(series_uid, []).append(
            Instance(
                path=str(path),
                sop_uid=sop,
                instance_number=meta.get("instance_number"),
                frames=int(meta.get("frames") or 1),
                view_position=meta.get("view_position"),
                modality=meta.get("modality"),
            )
        )

    def instance_key(i: Instance) -> tuple[bool, int, str]:
        return (i.instance_number is None, i.instance_number or 0, i.sop_uid)

    def series_key(uid: str) -> tuple[bool, str]:
        frontal = any(str(i.view_position or "").upper() in ("PA", "AP") for i in by_series[uid])
        return (not frontal, uid)

    series = tuple(
        Series(uid, modality[uid], tuple(sorted(by_series[uid], key=instance_key)))
        for uid in sorted(by_series, key=series_key)
    )
    return StudyImages(series, tuple(unreadable))
