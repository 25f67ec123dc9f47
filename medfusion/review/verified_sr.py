"""A reviewed study's VERIFIED DICOM SR, built from the UNVERIFIED SR batch scoring wrote (``score --sr``).

The clinician's current decisions (:meth:`~medfusion.review.store.ReviewStore.current`) become the
values of a VERIFIED SR (:class:`~medfusion.dicom_sr.write.Verification`) signed with the user's
display name, superseding the model's SR; it is written to ``<results>/sr_verified/<study>/<SOP>.dcm``
(atomically; an SR is only ever added). Like the UNVERIFIED SR it carries the patient's identifiers,
copied from that SR, because it goes to the hospital's PACS; nothing here logs them.

Imports: pydicom, :mod:`medfusion.dicom_sr`, :mod:`medfusion.results`, :mod:`medfusion.review.store`.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pydicom

from medfusion.dicom_sr.source import source_from_sr
from medfusion.dicom_sr.write import Verification, build_sr, sr_uids, write_sr
from medfusion.errors import MedfusionError
from medfusion.results import ResultRow
from medfusion.review.store import DecisionRecord

#: Folder of the VERIFIED SRs, next to the scoring job's ``sr/``.
VERIFIED_DIR = "sr_verified"


def unverified_sr(results_dir: str | Path, row: ResultRow) -> Path | None:
    """The UNVERIFIED SR batch scoring wrote for this result (matched by its SOP Instance UID), if any."""
    if row.study_uid is None:
        return None
    _, sop_uid = sr_uids(row)
    for path in sorted(Path(results_dir, "sr").glob(f"part-*/{row.study_uid}.dcm")):
        try:
            found = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        except (OSError, pydicom.errors.InvalidDicomError):
            continue
        if str(found.get("SOPInstanceUID", "")) == sop_uid:
            return path
    return None


def issue_verified_sr(
    results_dir: str | Path, row: ResultRow, decisions: Sequence[DecisionRecord], signature: str, organization: str
) -> Path:
    """Write the VERIFIED SR of a reviewed study.

    Args:
        results_dir: The scoring output (holds ``sr/``).
        row: The study's model result.
        decisions: The study's current decisions (labels the model does not have are ignored).
        signature: The verifying observer's name (the user's display name).
        organization: The verifying organization (required by DICOM: not empty).

    Returns:
        The SR file written.

    Raises:
        MedfusionError: The job wrote no SR for this study and model (score with ``--sr``), or no
            decision is about one of the model's labels.
    """
    if not organization.strip():
        raise MedfusionError("a verified SR names the verifying organization: set medfusion review --organization")
    source_path = unverified_sr(results_dir, row)
    if source_path is None:
        raise MedfusionError("batch scoring wrote no SR for this study and model (score it with --sr)")
    reviewed = {d.label: d.reviewed_value for d in decisions if d.label in row.labels}
    if not reviewed:
        raise MedfusionError("no decision on the model's labels to verify")
    predecessor = pydicom.dcmread(source_path)
    verified_at = max(dt.datetime.fromisoformat(d.decided_at) for d in decisions if d.label in reviewed)
    verification = Verification(signature, organization, verified_at, reviewed, predecessor)
    sr = build_sr(row, source_from_sr(predecessor), verification=verification)
    out = Path(results_dir, VERIFIED_DIR, str(row.study_uid), f"{sr.SOPInstanceUID}.dcm")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".sr.", suffix=".tmp")
    os.close(fd)
    try:
        write_sr(sr, Path(tmp))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def send_verified_sr(path: Path, stow_url: str) -> None:
    """Send a VERIFIED SR to the PACS with STOW-RS (bounded retries; storing it again stores nothing new).

    Raises:
        InputRejected: The URL is not a DICOMweb root, or the PACS did not store it (after retries).
    """
    from medfusion.scoring.dicomweb import DicomwebSource

    DicomwebSource(stow_url).store(path)
